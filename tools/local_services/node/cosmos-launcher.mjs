#!/usr/bin/env node
// Starts @zeit/cosmosdb-server 0.13.4 over HTTPS with a certificate we provide, and wraps its
// route dispatch to fix what the Python SDK (azure-cosmos 4.x) trips on.
//
// Usage: node cosmos-launcher.mjs --cert CERT.pem --key KEY.pem [--port P] [--host 127.0.0.1]
// (or COSMOS_CERT_FILE, COSMOS_KEY_FILE, COSMOS_PORT, COSMOS_HOST). Prints "ready <url>" once
// listening; SIGTERM/SIGINT close it. COSMOS_LAUNCHER_DEBUG=1 logs each request to stderr.
//
// Fixes, all in this file (the package itself is untouched):
//  - point read / replace / delete / create on a missing item or container: 404, not 500;
//  - queries scoped by the x-ms-documentdb-partitionkey header only return that partition
//    (stock returns every partition, or 400 when the SQL text does not name the key);
//  - transactional batch: partition key copied from the header into each operation, Patch
//    operations supported, ifMatch/ifNoneMatch honoured, and an atomic batch that fails is
//    rolled back;
//  - PATCH (JSON-patch style ops add/set/replace/remove/incr/move, `condition` filter
//    predicate, if-match) implemented;
//  - keep-alive instead of "connection: close" on every response.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const libRequire = createRequire(require.resolve("@zeit/cosmosdb-server"));

const server = libRequire("./index.js");
const routesModule = libRequire("./routes.js");
const docOps = libRequire("./handler/_document-operations.js");
const readJson = libRequire("./json.js").default;
const trueHeader = libRequire("./true-header.js").default;
const pathMatch = libRequire("./path-match.js").default;
const cosmosQuery = libRequire("@zeit/cosmosdb-query");

const PK_HEADER = "x-ms-documentdb-partitionkey";

// ---------------------------------------------------------------- arguments
function parseArgs(argv) {
  const args = {
    cert: process.env.COSMOS_CERT_FILE,
    key: process.env.COSMOS_KEY_FILE,
    port: process.env.COSMOS_PORT,
    host: process.env.COSMOS_HOST || "127.0.0.1",
  };
  for (let i = 0; i < argv.length; i += 1) {
    const name = argv[i];
    const value = argv[i + 1];
    if (["--cert", "--key", "--port", "--host"].includes(name) && value !== undefined) {
      args[name.slice(2)] = value;
      i += 1;
    } else {
      throw new Error(`unknown argument: ${name}`);
    }
  }
  if (!args.cert || !args.key) {
    throw new Error("--cert and --key (or COSMOS_CERT_FILE / COSMOS_KEY_FILE) are required");
  }
  args.port = args.port === undefined ? 0 : Number.parseInt(args.port, 10);
  if (!Number.isInteger(args.port) || args.port < 0 || args.port > 65535) {
    throw new Error(`invalid port: ${args.port}`);
  }
  return args;
}

// ---------------------------------------------------------------- helpers
function notFound(res) {
  res.statusCode = 404;
  return {
    code: "NotFound",
    message: "Entity with the specified id does not exist in the system.",
  };
}

function badRequest(res, message) {
  res.statusCode = 400;
  return { code: "BadRequest", message };
}

function preconditionFailed(res) {
  res.statusCode = 412;
  return {
    code: "PreconditionFailed",
    message: "Operation cannot be performed because one of the specified precondition is not met.",
  };
}

function headerValue(req, name) {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function collectionOf(account, dbId, collId) {
  if (!account.database(dbId).read()) return null;
  const collection = account.database(dbId).collection(collId);
  return collection.read() ? collection : null;
}

/** The partition key header as { present, value } (value undefined for "[{}]" / none). */
function partitionFromHeader(req) {
  const raw = headerValue(req, PK_HEADER);
  if (raw === undefined || raw === "") return { present: false, value: undefined };
  let parsed;
  try {
    parsed = JSON.parse(raw);
  } catch {
    return { present: false, value: undefined, invalid: true };
  }
  const first = Array.isArray(parsed) ? parsed[0] : parsed;
  if (first !== null && typeof first === "object") {
    // [{}] is how the SDKs spell "no value" (the partition of items lacking the key).
    return { present: true, value: undefined, none: true };
  }
  return { present: true, value: first };
}

function readItem(collection, id, partitionValue) {
  // The store keys items by "<partition value || id>:/id:<id>", like the stock handlers.
  return collection.document(id, partitionValue).read();
}

function partitionKeyPaths(collection) {
  const pk = collection.read().partitionKey;
  return pk && Array.isArray(pk.paths) ? pk.paths : [];
}

// ---------------------------------------------------------------- JSON patch
function decodePointer(path) {
  if (typeof path !== "string" || !path.startsWith("/") || path === "/") {
    throw new Error(`invalid patch path '${path}'`);
  }
  return path
    .slice(1)
    .split("/")
    .map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"));
}

function resolveParent(doc, path) {
  const keys = decodePointer(path);
  let parent = doc;
  for (const key of keys.slice(0, -1)) {
    if (parent === null || typeof parent !== "object" || !(key in parent)) {
      throw new Error(`path '${path}' does not exist`);
    }
    parent = parent[key];
  }
  if (parent === null || typeof parent !== "object") {
    throw new Error(`path '${path}' does not exist`);
  }
  return [parent, keys[keys.length - 1]];
}

function arrayIndex(array, key, path, allowEnd) {
  if (key === "-" && allowEnd) return array.length;
  if (!/^(0|[1-9][0-9]*)$/.test(key)) throw new Error(`invalid array index in '${path}'`);
  const index = Number(key);
  if (index > array.length || (!allowEnd && index === array.length)) {
    throw new Error(`array index out of range in '${path}'`);
  }
  return index;
}

function getAt(doc, path) {
  const [parent, key] = resolveParent(doc, path);
  if (Array.isArray(parent)) return parent[arrayIndex(parent, key, path, false)];
  if (!(key in parent)) throw new Error(`path '${path}' does not exist`);
  return parent[key];
}

function removeAt(doc, path) {
  const [parent, key] = resolveParent(doc, path);
  if (Array.isArray(parent)) {
    return parent.splice(arrayIndex(parent, key, path, false), 1)[0];
  }
  if (!(key in parent)) throw new Error(`path '${path}' does not exist`);
  const value = parent[key];
  delete parent[key];
  return value;
}

function applyPatchOperation(doc, operation) {
  const { op, path, value } = operation || {};
  switch (op) {
    case "add": {
      const [parent, key] = resolveParent(doc, path);
      if (Array.isArray(parent)) parent.splice(arrayIndex(parent, key, path, true), 0, value);
      else parent[key] = value;
      break;
    }
    case "set": {
      const [parent, key] = resolveParent(doc, path);
      if (Array.isArray(parent)) {
        const index = arrayIndex(parent, key, path, true);
        if (index === parent.length) parent.push(value);
        else parent[index] = value;
      } else parent[key] = value;
      break;
    }
    case "replace": {
      const [parent, key] = resolveParent(doc, path);
      if (Array.isArray(parent)) parent[arrayIndex(parent, key, path, false)] = value;
      else if (!(key in parent)) throw new Error(`path '${path}' does not exist`);
      else parent[key] = value;
      break;
    }
    case "remove":
      removeAt(doc, path);
      break;
    case "incr": {
      if (typeof value !== "number") throw new Error(`incr value for '${path}' is not a number`);
      const [parent, key] = resolveParent(doc, path);
      if (Array.isArray(parent)) {
        const index = arrayIndex(parent, key, path, false);
        if (typeof parent[index] !== "number") throw new Error(`'${path}' is not a number`);
        parent[index] += value;
      } else if (!(key in parent)) parent[key] = value;
      else if (typeof parent[key] !== "number") throw new Error(`'${path}' is not a number`);
      else parent[key] += value;
      break;
    }
    case "move": {
      if (operation.from === path) break;
      if (typeof path === "string" && path.startsWith(`${operation.from}/`)) {
        throw new Error(`cannot move '${operation.from}' into itself`);
      }
      const moved = removeAt(doc, operation.from);
      applyPatchOperation(doc, { op: "add", path, value: moved });
      break;
    }
    default:
      throw new Error(`unsupported patch operation '${op}'`);
  }
}

function conditionHolds(doc, condition) {
  if (!condition) return true;
  const query = cosmosQuery.default(`SELECT VALUE 1 ${condition}`);
  const { result } = query.exec([doc], {});
  return result.length > 0;
}

/**
 * Applies a patch request body ({operations, condition}) to the stored item.
 * Returns {statusCode, body} like the package's document operations.
 */
function patchOperation(collection, { id, partitionValue, ifMatch, resourceBody }) {
  const operations = resourceBody && resourceBody.operations;
  if (!Array.isArray(operations) || operations.length === 0) {
    return { statusCode: 400, body: { code: "BadRequest", message: "missing patch operations" } };
  }
  const original = readItem(collection, id, partitionValue);
  if (!original) return { statusCode: 404, body: notFound({}) };
  if (ifMatch && ifMatch !== "*" && ifMatch !== original._etag) {
    return { statusCode: 412, body: preconditionFailed({}) };
  }
  let conditionOk;
  try {
    conditionOk = conditionHolds(original, resourceBody.condition);
  } catch (err) {
    return { statusCode: 400, body: { code: "BadRequest", message: err.message } };
  }
  if (!conditionOk) return { statusCode: 412, body: preconditionFailed({}) };

  const protectedPaths = new Set(["/id", ...partitionKeyPaths(collection)]);
  const doc = structuredClone(original);
  try {
    for (const operation of operations) {
      for (const p of [operation && operation.path, operation && operation.from]) {
        if (p !== undefined && [...protectedPaths].some((x) => p === x || p.startsWith(`${x}/`))) {
          throw new Error(`patching '${p}' (id or partition key) is not allowed`);
        }
      }
      applyPatchOperation(doc, operation);
    }
  } catch (err) {
    return { statusCode: 400, body: { code: "BadRequest", message: err.message } };
  }
  try {
    return { statusCode: 200, body: collection.documents.replace(doc, original) };
  } catch (err) {
    if (err.badRequest) return { statusCode: 400, body: { code: "BadRequest", message: err.message } };
    if (err.conflict) return { statusCode: 409, body: { code: "Conflict", message: err.message } };
    throw err;
  }
}

// ---------------------------------------------------------------- handlers
const stockRoute = routesModule.default;

async function readDocument(account, req, res, params, stock) {
  const collection = collectionOf(account, params.dbId, params.collId);
  if (!collection) return notFound(res);
  const pk = partitionFromHeader(req);
  if (pk.invalid) return badRequest(res, `invalid ${PK_HEADER} header`);
  if (pk.present && !readItem(collection, params.docId, pk.value)) return notFound(res);
  return stock(account, req, res, params);
}

async function writeDocument(account, req, res, params, stock) {
  // replace (PUT), delete, create, upsert: 404 when the container (or the item) is missing
  const collection = collectionOf(account, params.dbId, params.collId);
  if (!collection) {
    if (req.method !== "DELETE" && req.method !== "GET") await readJson(req).catch(() => null);
    return notFound(res);
  }
  if (params.docId !== undefined) {
    const pk = partitionFromHeader(req);
    if (pk.invalid || !pk.present) {
      return badRequest(res, `missing or invalid ${PK_HEADER} header`);
    }
    if (!readItem(collection, params.docId, pk.value)) {
      if (req.method === "PUT") await readJson(req).catch(() => null);
      return notFound(res);
    }
  }
  return stock(account, req, res, params);
}

async function patchDocument(account, req, res, params) {
  let body;
  try {
    body = await readJson(req);
  } catch {
    return badRequest(res, "invalid JSON body");
  }
  const collection = collectionOf(account, params.dbId, params.collId);
  if (!collection) return notFound(res);
  const pk = partitionFromHeader(req);
  if (pk.invalid || !pk.present) return badRequest(res, `missing or invalid ${PK_HEADER} header`);
  const result = patchOperation(collection, {
    id: params.docId,
    partitionValue: pk.value,
    ifMatch: headerValue(req, "if-match"),
    resourceBody: body,
  });
  res.statusCode = result.statusCode;
  return result.body;
}

function queryItems(account, req, res, params, stock) {
  // Queries without a partition key header (cross-partition) go to the stock handler.
  const pk = partitionFromHeader(req);
  if (!pk.present) {
    return stock(account, req, res, params);
  }
  const readItems = libRequire("./handler/_read-items.js").default;
  return readItems(req, res, "Documents", async ({ continuation, maxItemCount }) => {
    const body = await readJson(req);
    if (!body.query) {
      res.statusCode = 400;
      return { message: "missing query" };
    }
    const collection = collectionOf(account, params.dbId, params.collId);
    if (!collection) return null; // -> 404
    const items = collection.documents;
    const data = [...items._data.values()]
      .map((item) => item.read())
      .filter((doc) => {
        const value = items._getPartition(doc);
        return pk.none ? value === undefined : value === pk.value;
      });
    const compositeIndexes =
      (collection.read().indexingPolicy || {}).compositeIndexes || [];
    try {
      return items._getQuery(body.query).exec(data, {
        parameters: body.parameters,
        udf: items._userDefinedFunctions(),
        maxItemCount,
        continuation,
        compositeIndexes,
      });
    } catch (err) {
      if (err instanceof cosmosQuery.SyntaxError) throw err; // -> 400 by _read-items
      res.statusCode = 400;
      return { code: "BadRequest", message: err.message };
    }
  });
}

const BATCH_SUPPORTED = new Set(["Create", "Upsert", "Read", "Delete", "Replace", "Patch"]);

async function batchDocuments(account, req, res, params) {
  let body;
  try {
    body = await readJson(req);
  } catch {
    return badRequest(res, "invalid JSON body");
  }
  const collection = collectionOf(account, params.dbId, params.collId);
  if (!collection) return notFound(res);
  if (!Array.isArray(body)) return badRequest(res, "Invalid request body");
  const atomic = trueHeader(req, "x-ms-cosmos-batch-atomic");
  const continueOnError = trueHeader(req, "x-ms-cosmos-batch-continue-on-error");
  const headerPk = headerValue(req, PK_HEADER);
  const pk = partitionFromHeader(req);
  for (const input of body) {
    const type = input ? input.operationType : null;
    if (!BATCH_SUPPORTED.has(type)) {
      return badRequest(res, `Operation type '${type}' is not supported in Batch.`);
    }
  }

  // Snapshot for rollback: the store is three plain fields of the Items object.
  const items = collection.documents;
  const snapshot = {
    data: new Map(items._data),
    index: new Map(items._index),
    ridCount: items._ridCount,
  };

  const responses = [];
  let failed = false;
  for (const raw of body) {
    if (failed && !continueOnError) {
      responses.push({ statusCode: 424, requestCharge: 0 });
      continue;
    }
    const input = { ...raw };
    if (input.partitionKey === undefined && headerPk !== undefined) input.partitionKey = headerPk;
    const id = input.id !== undefined ? input.id : (input.resourceBody || {}).id;
    let result;
    if (input.ifNoneMatch && id !== undefined) {
      const existing = readItem(collection, id, pk.value);
      if (existing && (input.ifNoneMatch === "*" || input.ifNoneMatch === existing._etag)) {
        result = { statusCode: input.operationType === "Read" ? 304 : 412, body: {} };
      }
    }
    if (!result) {
      switch (input.operationType) {
        case "Create":
          result = docOps.createOperation(collection, input);
          break;
        case "Upsert":
          result = docOps.upsertOperation(collection, input);
          break;
        case "Read":
          result = docOps.readOperation(collection, input);
          break;
        case "Delete":
          result = docOps.deleteOperation(collection, input);
          break;
        case "Replace":
          result = docOps.replaceOperation(collection, input);
          break;
        case "Patch":
          result = patchOperation(collection, {
            id: input.id,
            partitionValue: pk.value,
            ifMatch: input.ifMatch,
            resourceBody: input.resourceBody,
          });
          break;
        default:
          break;
      }
    }
    failed = result.statusCode >= 400;
    if (failed) {
      responses.push({ statusCode: result.statusCode, requestCharge: 0 });
    } else {
      responses.push({
        statusCode: result.statusCode,
        requestCharge: 1,
        eTag: result.body ? result.body._etag : undefined,
        resourceBody: result.body,
      });
    }
  }
  if (atomic && responses.some((r) => r.statusCode >= 400)) {
    items._data = snapshot.data;
    items._index = snapshot.index;
    items._ridCount = snapshot.ridCount;
    // Cosmos answers 207 Multi-Status for a failed atomic batch; the first failure keeps its
    // status, every other operation reports 424 (Failed Dependency).
    const firstFailure = responses.findIndex((r) => r.statusCode >= 400);
    res.statusCode = 207;
    return responses.map((r, i) =>
      i === firstFailure ? r : { statusCode: 424, requestCharge: 0 },
    );
  }
  return responses;
}

// ---------------------------------------------------------------- routing
const DOC = "/dbs/:dbId/colls/:collId/docs/:docId";
const DOCS = "/dbs/:dbId/colls/:collId/docs";
const overrides = [
  ["GET", DOC, readDocument],
  ["PUT", DOC, writeDocument],
  ["DELETE", DOC, writeDocument],
  ["PATCH", DOC, patchDocument],
  ["POST", DOCS, writeDocument],
  ["POST_UPSERT", DOCS, writeDocument],
  ["POST_QUERY", DOCS, queryItems],
  ["POST_BATCH", DOCS, batchDocuments],
].map(([method, path, handler]) => [method, pathMatch(path), handler]);

function routeMethod(req) {
  // Mirrors the package's router (lib/router.js), which we cannot ask for its decision.
  if (
    req.method === "POST" &&
    (trueHeader(req, "x-ms-documentdb-isquery") ||
      req.headers["content-type"] === "application/query+json")
  ) {
    return "POST_QUERY";
  }
  if (trueHeader(req, "x-ms-documentdb-is-upsert")) return `${req.method}_UPSERT`;
  if (trueHeader(req, "x-ms-cosmos-is-batch-request")) return `${req.method}_BATCH`;
  return req.method;
}

function pathnameOf(req) {
  let { pathname } = new URL(req.url, "https://localhost");
  if (pathname.startsWith("//")) pathname = pathname.slice(1);
  return pathname;
}

function keepAlive(res) {
  // The package sets "connection: close" on every answer: one TLS handshake per request.
  const setHeader = res.setHeader.bind(res);
  res.setHeader = (name, value) =>
    String(name).toLowerCase() === "connection" ? res : setHeader(name, value);
}

function withStatusGuard(handler) {
  // The package assumes every error answer has a JSON object body.
  return async (account, req, res, params) => {
    keepAlive(res);
    const body = await handler(account, req, res, params);
    return body === undefined && res.statusCode > 399 ? {} : body;
  };
}

const DEBUG = Boolean(process.env.COSMOS_LAUNCHER_DEBUG);

routesModule.default = (req) => {
  const method = routeMethod(req);
  if (DEBUG) {
    const headers = Object.entries(req.headers)
      .filter(([k]) => k.startsWith("x-ms-") || k.startsWith("if-") || k === "content-type")
      .filter(([k]) => !["x-ms-date", "x-ms-version", "x-ms-activity-id"].includes(k))
      .map(([k, v]) => `${k}=${v}`)
      .join(" ");
    process.stderr.write(`${method} ${req.url} ${headers}\n`);
  }
  const stock = stockRoute(req);
  const pathname = pathnameOf(req);
  for (const [m, match, handler] of overrides) {
    if (m !== method) continue;
    const params = match(pathname);
    if (params) {
      const stockHandler = stock ? stock[1] : null;
      return [params, withStatusGuard((a, rq, rs, p) => handler(a, rq, rs, p, stockHandler))];
    }
  }
  if (!stock) return undefined;
  return [stock[0], withStatusGuard(stock[1])];
};

// ---------------------------------------------------------------- main
function main() {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`cosmos-launcher: ${err.message}\n`);
    process.exit(2);
  }
  const httpsServer = server.createHttpsServer({
    cert: readFileSync(args.cert),
    key: readFileSync(args.key),
    minVersion: "TLSv1.2",
  });
  httpsServer.keepAliveTimeout = 30_000;
  httpsServer.on("error", (err) => {
    process.stderr.write(`cosmos-launcher: ${err.stack || err}\n`);
    process.exit(1);
  });
  httpsServer.listen(args.port, args.host, () => {
    const { port } = httpsServer.address();
    process.stdout.write(`ready https://${args.host}:${port}/\n`);
  });
  const stop = () => {
    httpsServer.close(() => process.exit(0));
    httpsServer.closeAllConnections();
    setTimeout(() => process.exit(0), 1000).unref();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main();
