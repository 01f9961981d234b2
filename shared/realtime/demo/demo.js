// Timbre's realtime voice demo: speak to an agent, hear it answer, interrupt it.
//
// Connect: POST /api/v1/voice/negotiate (bearer token) -> a Web PubSub URL -> a WebSocket
// under json.webpubsub.azure.v1 -> `init` -> `ready`. Then the microphone runs through an
// AudioWorklet into 40 ms PCM16 frames at 24 kHz; an energy detector starts an utterance
// (sending ~360 ms of pre-roll, so the first word is whole) and commits it after 700 ms of
// silence. The agent's sentences (`reply`) show in the conversation; the answer's audio
// chunks play in (turn, seq) order, scheduled back to back on the AudioContext. Speaking
// while the agent plays stops playback here first, then sends `cancel`. Everything the
// page learns is kept in `window.timbreDemo` (tests read it).

const API = "/api/v1";
const WORKLET_URL = "/api/v1/voice/demo/microphone-worklet.js";
const SUBPROTOCOL = "json.webpubsub.azure.v1";
const SAMPLE_RATE = 24000;
const FRAME_MS = 40;
const FRAME_SAMPLES = (SAMPLE_RATE * FRAME_MS) / 1000;
const PRE_ROLL_FRAMES = 9; // 360 ms before the onset goes with the utterance
const ONSET_FRAMES = 2; // 80 ms above the threshold starts an utterance
const BARGE_IN_FRAMES = 4; // 160 ms while the agent speaks (an echo must not interrupt it)
const HANGOVER_MS = 700; // this much silence after speech commits the utterance
const MAX_UTTERANCE_MS = 25000; // below the server's 30 s cut
const MIN_THRESHOLD = 0.015; // RMS of full scale (about -36 dBFS)
const PLAYBACK_LEAD_S = 0.08; // a little jitter buffer when playback (re)starts

const LATENCY_LABELS = {
  transcribed_ms: "Speech to text",
  first_token_ms: "Agent's first word",
  first_audio_ms: "First speech made",
  first_chunk_sent_ms: "First audio sent",
  total_ms: "Whole turn (server)",
  heard_ms: "Commit to first audio (this browser)",
};

const state = {
  status: "idle", // idle | connecting | connected | closed
  sessionId: null,
  agentId: null,
  agents: [],
  transcripts: [], // what the user said, as the server heard it
  conversation: [], // {who: "user" | "agent" | "system", text}
  answers: [], // {turn, agent, text}: what the agent said, sentence by sentence
  turns: [], // {turn, latency_ms}
  switches: [], // agent ids switched to
  cancelledTurns: [],
  errors: [], // {code, message}
  audioChunksReceived: 0,
  audioChunksPlayed: 0,
  chunks: {}, // turn -> {received, played}, for the current connection
  gaps: 0, // chunks of a turn that started late: the answer stuttered
  framesSent: 0,
  commits: 0,
  bargeIns: 0,
  speaking: false,
  playing: false,
};
window.timbreDemo = state;

const $ = (id) => document.getElementById(id);
const ui = {
  token: $("token"),
  agent: $("agent"),
  connect: $("connect"),
  disconnect: $("disconnect"),
  status: $("status"),
  level: $("level"),
  speaking: $("speaking"),
  transcript: $("transcript"),
  latency: $("latency"),
  errors: $("errors"),
};

let audio = null; // {ctx, stream, source, node}
let socket = null;
let closing = false;
// Per connection (its turns count from 1): turn -> the agent's answer and its line, and
// turn -> ms from the commit to its first chunk, in this browser.
const answerLines = new Map();
const heard = new Map();
let committedAt = 0;

// ---- what the person sees ---------------------------------------------------------------

function setStatus(status, text) {
  state.status = status;
  ui.status.textContent = text;
  const connected = status === "connecting" || status === "connected";
  ui.connect.disabled = connected;
  ui.disconnect.disabled = !connected;
  ui.token.disabled = connected;
}

function addLine(who, text) {
  const entry = { who, text };
  state.conversation.push(entry);
  const li = document.createElement("li");
  li.className = who;
  li.textContent = text;
  ui.transcript.append(li);
  li.scrollIntoView({ block: "nearest" });
  return { entry, li };
}

function setLine(line, text) {
  line.entry.text = text;
  line.li.textContent = text;
}

// The agent's line of a turn: made at its first sentence (or chunk), grown by each one.
function answerOf(turn) {
  if (!answerLines.has(turn)) {
    const name = agentName(state.agentId);
    const answer = { turn, agent: state.agentId, text: "" };
    state.answers.push(answer);
    answerLines.set(turn, { answer, name, note: "", line: addLine("agent", `${name}: …`) });
  }
  return answerLines.get(turn);
}

function showAnswer(shown) {
  const text = shown.answer.text || "…";
  setLine(shown.line, `${shown.name}: ${text}${shown.note ? ` (${shown.note})` : ""}`);
}

function showError(code, message) {
  state.errors.push({ code, message });
  const li = document.createElement("li");
  li.textContent = `${message} (${code})`;
  ui.errors.append(li);
}

function showLatency(latency) {
  ui.latency.replaceChildren();
  for (const [key, value] of Object.entries(latency)) {
    const dt = document.createElement("dt");
    dt.textContent = LATENCY_LABELS[key] || key;
    const dd = document.createElement("dd");
    dd.textContent = `${Math.round(value)} ms`;
    ui.latency.append(dt, dd);
  }
}

function agentName(id) {
  const agent = state.agents.find((a) => a.id === id);
  return agent ? agent.name : id;
}

// ---- the API ------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${ui.token.value.trim()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(API + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const payload = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(
      (payload && payload.reason) || `http_${response.status}`,
      (payload && payload.detail) || response.statusText,
    );
  }
  return payload;
}

async function loadAgents() {
  if (!ui.token.value.trim()) return;
  try {
    const { agents } = await api("GET", "/agents");
    state.agents = agents;
    const chosen = ui.agent.value;
    ui.agent.replaceChildren(
      ...agents.map((a) => new Option(`${a.name}, ${a.title}`, a.id, false, a.id === chosen)),
    );
    ui.agent.disabled = false;
  } catch (error) {
    showError(error.code || "agents_unavailable", error.message);
  }
}

// ---- the session ------------------------------------------------------------------------

function subprotocol() {
  return socket && socket.protocol === SUBPROTOCOL;
}

// One client message, in the connection's form: a subprotocol event, or plain JSON.
function send(type, fields = {}) {
  if (!socket || socket.readyState !== WebSocket.OPEN) return false;
  if (subprotocol()) {
    socket.send(JSON.stringify({ type: "event", event: type, dataType: "json", data: fields }));
  } else {
    socket.send(JSON.stringify({ type, ...fields }));
  }
  return true;
}

function base64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

// One audio frame: a 4-byte big-endian seq, then the PCM16 (the binary form of `audio`).
function sendAudio(pcm, seq) {
  if (!socket || socket.readyState !== WebSocket.OPEN) return;
  const frame = new Uint8Array(4 + pcm.byteLength);
  new DataView(frame.buffer).setUint32(0, seq);
  frame.set(new Uint8Array(pcm), 4);
  if (subprotocol()) {
    // Binary data travels base64 in the JSON frame and reaches the upstream as raw bytes.
    const event = { type: "event", event: "audio", dataType: "binary", data: base64(frame) };
    socket.send(JSON.stringify(event));
  } else {
    socket.send(frame);
  }
  state.framesSent += 1;
}

async function connect() {
  if (!ui.token.value.trim()) {
    showError("token_required", "Enter a token first");
    return;
  }
  if (!window.isSecureContext || !navigator.mediaDevices || !window.AudioWorkletNode) {
    showError("microphone_unavailable", "The microphone needs this page on https or localhost");
    return;
  }
  closing = false;
  setStatus("connecting", "Connecting…");
  // Made inside the click, so that the browser lets it play.
  if (!audio) audio = { ctx: new AudioContext({ sampleRate: SAMPLE_RATE }) };
  audio.ctx.resume();
  try {
    if (!state.agents.length) await loadAgents();
    const body = { agent_id: ui.agent.value || undefined };
    if (state.sessionId) body.session_id = state.sessionId; // continue the conversation
    const negotiated = await api("POST", "/voice/negotiate", body);
    state.sessionId = negotiated.session_id;
    openSocket(negotiated);
  } catch (error) {
    showError(error.code || "negotiate_failed", error.message);
    setStatus("closed", "Not connected.");
  }
}

function openSocket(negotiated) {
  Object.assign(player, { turn: 0, expected: 0, cancelledThrough: 0, nextTime: 0 });
  answerLines.clear();
  heard.clear();
  state.chunks = {};
  socket = new WebSocket(negotiated.url, SUBPROTOCOL);
  socket.onopen = () => send("init", { session_id: negotiated.session_id });
  socket.onmessage = (event) => receive(event.data);
  socket.onerror = () => showError("connection_failed", "The voice connection failed");
  socket.onclose = (event) => {
    socket = null;
    stopMicrophone();
    stopPlayback();
    if (!closing && event.code !== 1000) {
      showError("connection_closed", event.reason || `The connection closed (${event.code})`);
    }
    setStatus("closed", "Disconnected.");
  };
}

function disconnect() {
  closing = true;
  send("end");
  if (socket) socket.close(1000);
  stopMicrophone();
  stopPlayback();
  setStatus("closed", "Disconnected.");
}

function receive(raw) {
  let message;
  try {
    message = JSON.parse(raw);
  } catch {
    showError("invalid_message", "The server sent something unreadable");
    return;
  }
  if (subprotocol()) {
    if (message.type === "system" && message.event === "disconnected") {
      setStatus("closed", `Disconnected: ${message.message || "by the service"}`);
    }
    if (message.type !== "message") return; // `connected`, acks
    message = message.dataType === "json" ? message.data : JSON.parse(message.data);
  }
  handle(message);
}

function handle(message) {
  switch (message.type) {
    case "ready":
      state.sessionId = message.session_id;
      state.agentId = message.agent.id;
      ui.agent.value = message.agent.id;
      setStatus("connected", `Connected: speak to ${message.agent.name}.`);
      startMicrophone().catch((error) => {
        showError("microphone_unavailable", `The microphone could not start: ${error.message}`);
      });
      break;
    case "transcription":
      if (message.status === "processing") ui.speaking.textContent = "thinking…";
      if (message.status === "complete" && message.text) {
        state.transcripts.push(message.text);
        addLine("user", `You: ${message.text}`);
      }
      break;
    case "reply": {
      if (message.turn <= player.cancelledThrough) break; // interrupted: it will not be said
      const shown = answerOf(message.turn);
      shown.answer.text = `${shown.answer.text} ${message.text}`.trim();
      showAnswer(shown);
      break;
    }
    case "audio":
      state.audioChunksReceived += 1;
      chunksOf(message.turn).received += 1;
      enqueueAudio(message);
      break;
    case "turn":
      state.turns.push({ turn: message.turn, latency_ms: message.latency_ms });
      showLatency({ ...message.latency_ms, ...heardLatency(message.turn) });
      break;
    case "turn_cancelled":
      state.cancelledTurns.push(message.turn);
      dropTurnsThrough(message.turn);
      if (answerLines.has(message.turn)) {
        const shown = answerLines.get(message.turn);
        shown.note = "interrupted";
        showAnswer(shown);
      }
      break;
    case "agent_switched":
      state.agentId = message.agent_id;
      state.switches.push(message.agent_id);
      ui.agent.value = message.agent_id;
      addLine("system", `Now speaking with ${agentName(message.agent_id)}.`);
      break;
    case "error":
      showError(message.code, message.message);
      if (message.code === "unknown_agent" && state.agentId) ui.agent.value = state.agentId;
      break;
    default:
      break; // a message of a newer server: ignored
  }
}

function chunksOf(turn) {
  if (!state.chunks[turn]) state.chunks[turn] = { received: 0, played: 0 };
  return state.chunks[turn];
}

function heardLatency(turn) {
  return heard.has(turn) ? { heard_ms: heard.get(turn) } : {};
}

// ---- playback ---------------------------------------------------------------------------

const player = {
  sources: new Set(),
  nextTime: 0,
  turn: 0,
  expected: 0,
  pending: new Map(),
  cancelledThrough: 0,
};

function enqueueAudio({ turn, seq, data }) {
  if (turn <= player.cancelledThrough || turn < player.turn) return; // interrupted or old
  if (turn !== player.turn) {
    player.turn = turn;
    player.expected = 0;
    player.pending.clear();
    heard.set(turn, Math.round(performance.now() - committedAt));
    answerOf(turn);
  }
  player.pending.set(seq, data);
  while (player.pending.has(player.expected)) {
    schedule(player.pending.get(player.expected), turn, player.expected);
    player.pending.delete(player.expected);
    player.expected += 1;
  }
}

function schedule(data, turn, seq) {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const samples = bytes.length >> 1;
  if (!audio || samples === 0) return;
  const { ctx } = audio;
  const buffer = ctx.createBuffer(1, samples, SAMPLE_RATE);
  const channel = buffer.getChannelData(0);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < samples; i += 1) channel[i] = view.getInt16(i * 2, true) / 0x8000;
  const source = ctx.createBufferSource();
  source.buffer = buffer;
  source.connect(ctx.destination);
  // Back to back with the chunk before; after an underrun, a little ahead of now.
  const at = Math.max(player.nextTime, ctx.currentTime + PLAYBACK_LEAD_S);
  if (seq > 0 && at > player.nextTime) state.gaps += 1;
  source.start(at);
  player.nextTime = at + buffer.duration;
  player.sources.add(source);
  state.playing = true;
  source.onended = () => {
    if (player.sources.delete(source)) {
      state.audioChunksPlayed += 1;
      chunksOf(turn).played += 1;
    }
    state.playing = player.sources.size > 0;
  };
}

function stopPlayback() {
  for (const source of player.sources) {
    source.onended = null;
    source.stop();
  }
  player.sources.clear();
  player.pending.clear();
  player.nextTime = 0;
  player.cancelledThrough = Math.max(player.cancelledThrough, player.turn);
  state.playing = false;
}

function dropTurnsThrough(turn) {
  player.cancelledThrough = Math.max(player.cancelledThrough, turn);
  if (player.turn <= turn && player.sources.size) stopPlayback();
}

// ---- the microphone and the utterance detector -----------------------------------------

const detector = {
  preRoll: [],
  onset: 0,
  silentMs: 0,
  spokenMs: 0,
  seq: 0,
  noise: 0.002,
};

async function startMicrophone() {
  const { ctx } = audio;
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
  });
  if (!socket) {
    stream.getTracks().forEach((track) => track.stop()); // disconnected meanwhile
    return;
  }
  if (!audio.workletLoaded) {
    await ctx.audioWorklet.addModule(WORKLET_URL);
    audio.workletLoaded = true;
  }
  const source = ctx.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(ctx, "microphone-frames", {
    numberOfInputs: 1,
    numberOfOutputs: 1,
    outputChannelCount: [1],
    processorOptions: { frameSamples: FRAME_SAMPLES },
  });
  node.port.onmessage = (event) => onFrame(event.data.pcm, event.data.rms);
  source.connect(node);
  node.connect(ctx.destination); // it outputs silence; connected so that it is pulled
  Object.assign(audio, { stream, source, node });
  Object.assign(detector, { preRoll: [], onset: 0, seq: 0 });
  state.speaking = false;
}

function stopMicrophone() {
  if (!audio || !audio.stream) return;
  audio.stream.getTracks().forEach((track) => track.stop());
  audio.source.disconnect();
  audio.node.port.onmessage = null;
  audio.node.disconnect();
  Object.assign(audio, { stream: null, source: null, node: null });
  state.speaking = false;
  ui.speaking.textContent = "";
  ui.level.value = 0;
}

function onFrame(pcm, rms) {
  ui.level.value = Math.min(1, rms * 5);
  const threshold = Math.max(MIN_THRESHOLD, detector.noise * 4);
  const loud = rms > threshold;
  if (!state.speaking) {
    detector.preRoll.push(pcm);
    if (detector.preRoll.length > PRE_ROLL_FRAMES) detector.preRoll.shift();
    if (!loud) {
      detector.noise = 0.95 * detector.noise + 0.05 * rms;
      detector.onset = 0;
      return;
    }
    detector.onset += 1;
    if (detector.onset >= (state.playing ? BARGE_IN_FRAMES : ONSET_FRAMES)) startUtterance();
    return;
  }
  sendAudio(pcm, detector.seq);
  detector.seq += 1;
  detector.spokenMs += FRAME_MS;
  detector.silentMs = loud ? 0 : detector.silentMs + FRAME_MS;
  if (detector.silentMs >= HANGOVER_MS || detector.spokenMs >= MAX_UTTERANCE_MS) endUtterance();
}

function startUtterance() {
  if (state.playing) {
    // Barge-in: silence the agent here first (the person hears it stop at once), then
    // tell the server, which stops within a chunk.
    stopPlayback();
    state.bargeIns += 1;
    send("cancel");
  }
  state.speaking = true;
  ui.speaking.textContent = "listening…";
  detector.seq = 0; // each utterance counts its frames from 0
  detector.silentMs = 0;
  detector.spokenMs = 0;
  for (const frame of detector.preRoll) {
    sendAudio(frame, detector.seq);
    detector.seq += 1;
    detector.spokenMs += FRAME_MS;
  }
  detector.preRoll = [];
}

function endUtterance() {
  state.speaking = false;
  detector.onset = 0;
  ui.speaking.textContent = "";
  if (send("commit")) {
    state.commits += 1;
    committedAt = performance.now();
  }
}

// ---- wiring -----------------------------------------------------------------------------

function switchAgent() {
  if (state.status === "connected" && ui.agent.value !== state.agentId) {
    send("switch_agent", { agent_id: ui.agent.value });
  }
}

ui.connect.addEventListener("click", connect);
ui.disconnect.addEventListener("click", disconnect);
ui.agent.addEventListener("change", switchAgent);
ui.token.addEventListener("change", () => {
  state.sessionId = null; // another caller: another session
  loadAgents();
});

const offered = document.querySelector('meta[name="timbre-dev-token"]');
if (offered && offered.content) ui.token.value = offered.content;
loadAgents();
