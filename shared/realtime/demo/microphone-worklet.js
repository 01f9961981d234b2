// The microphone's AudioWorklet: mono float samples in, PCM16 frames out.
//
// It runs on the audio thread of an AudioContext created at 24 kHz, so its samples are
// already at the rate Timbre takes. Every `frameSamples` samples (960: 40 ms) it posts
// {pcm: ArrayBuffer of PCM16 little-endian, rms: 0..1} to the page, which decides what to
// send (the voice activity detection lives there, beside the pre-roll it needs).

class MicrophoneFrames extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.frameSamples = options.processorOptions.frameSamples;
    this.frame = new Float32Array(this.frameSamples);
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true; // no input yet (the source is still starting)
    let read = 0;
    while (read < channel.length) {
      const count = Math.min(channel.length - read, this.frameSamples - this.filled);
      this.frame.set(channel.subarray(read, read + count), this.filled);
      this.filled += count;
      read += count;
      if (this.filled === this.frameSamples) {
        this.post();
        this.filled = 0;
      }
    }
    return true;
  }

  post() {
    const pcm = new ArrayBuffer(this.frameSamples * 2);
    const view = new DataView(pcm);
    let energy = 0;
    for (let i = 0; i < this.frameSamples; i += 1) {
      const sample = Math.max(-1, Math.min(1, this.frame[i]));
      energy += sample * sample;
      view.setInt16(i * 2, sample < 0 ? sample * 0x8000 : sample * 0x7fff, true);
    }
    const rms = Math.sqrt(energy / this.frameSamples);
    this.port.postMessage({ pcm, rms }, [pcm]);
  }
}

registerProcessor("microphone-frames", MicrophoneFrames);
