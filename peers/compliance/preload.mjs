// Loaded before the IPFS Pinning Service API compliance suite (`node --import ./preload.mjs
// node_modules/@ipfs-shipyard/pinning-service-compliance/dist/src/index.js -s URL TOKEN`) by
// tests/compliance.py. It changes nothing on disk in node_modules; at run time it:
//
// 1. keeps every connection on this machine: a TCP connection to anything but loopback is
//    refused, said on stderr ("compliance-preload: REFUSED ...") and makes the exit code 86;
// 2. answers the one URL the suite fetches from the internet, the spec it builds its schemas
//    from (oas2joi -> swagger-parser -> json-schema-ref-parser, which calls `https.get`), from
//    the frozen copy named by $COMPLIANCE_SPEC;
// 3. points the suite's report folder (`docsDir`: markdown report, JSON totals, winston logs,
//    by default inside node_modules) at $COMPLIANCE_REPORTS;
// 4. writes one JSON line per API call and its expectations, as the suite judges them, to
//    $COMPLIANCE_RESULTS, and a summary line (the suite's own totals) when the process exits.
import { EventEmitter } from "node:events"
import { appendFileSync, readFileSync } from "node:fs"
import http from "node:http"
import https from "node:https"
import { isIP } from "node:net"
import net from "node:net"
import { register } from "node:module"
import process from "node:process"
import { Readable } from "node:stream"

const SPEC_URL =
  "https://raw.githubusercontent.com/ipfs/pinning-services-api-spec/v1.0.0/ipfs-pinning-service.yaml"
const REFUSED_EXIT = 86

function required(name) {
  const value = process.env[name]
  if (!value) {
    process.stderr.write(`compliance-preload: $${name} is not set\n`)
    process.exit(2)
  }
  return value
}

const specPath = required("COMPLIANCE_SPEC")
const resultsPath = required("COMPLIANCE_RESULTS")
required("COMPLIANCE_REPORTS") // read by the loader hook, in constants.js
const spec = readFileSync(specPath)

// --- 1. loopback only -------------------------------------------------------------------------

let refused = 0

function isLoopbackHost(host) {
  if (host === undefined || host === null || host === "") return true // Node's default: localhost
  const bare = String(host).replace(/^\[|\]$/g, "")
  if (bare === "localhost" || bare.endsWith(".localhost")) return true
  if (isIP(bare) === 4) return bare.startsWith("127.")
  if (isIP(bare) === 6) return bare === "::1" || /^::ffff:127\./i.test(bare)
  return false
}

function refuse(what) {
  refused += 1
  process.exitCode = REFUSED_EXIT
  const error = new Error(`compliance-preload: REFUSED a connection off this machine: ${what}`)
  process.stderr.write(`${error.message}\n${error.stack}\n`)
  return error
}

const originalConnect = net.Socket.prototype.connect
net.Socket.prototype.connect = function connect(...args) {
  const first = Array.isArray(args[0]) ? args[0][0] : args[0]
  let host
  if (first !== null && typeof first === "object") {
    if (typeof first.path === "string") return originalConnect.apply(this, args) // Unix socket
    host = first.host
  } else if (typeof first === "string" && !/^\d+$/.test(first)) {
    return originalConnect.apply(this, args) // a Unix socket path
  } else {
    host = typeof args[1] === "string" ? args[1] : undefined
  }
  if (!isLoopbackHost(host)) {
    const error = refuse(`${host}`)
    process.nextTick(() => this.destroy(error))
    return this
  }
  return originalConnect.apply(this, args)
}

process.on("exit", () => {
  if (refused > 0) {
    process.stderr.write(`compliance-preload: ${refused} connection(s) off this machine refused\n`)
    process.exitCode = REFUSED_EXIT
  }
})

// --- 2. the spec, from the frozen copy -----------------------------------------------------------

function urlOf(args) {
  const [first] = args
  if (typeof first === "string") return first
  if (first instanceof URL) return first.href
  if (first && typeof first === "object") {
    const protocol = first.protocol ?? "https:"
    const port = first.port ? `:${first.port}` : ""
    return `${protocol}//${first.hostname ?? first.host}${port}${first.path ?? "/"}`
  }
  return ""
}

function specRequest() {
  const request = new EventEmitter()
  request.setTimeout = () => request
  request.abort = () => {}
  request.destroy = () => {}
  request.end = () => {}
  process.nextTick(() => {
    const response = Readable.from([spec])
    response.statusCode = 200
    response.statusMessage = "OK"
    response.headers = { "content-type": "text/yaml" }
    request.emit("response", response)
  })
  return request
}

for (const module of [http, https]) {
  for (const name of ["get", "request"]) {
    const original = module[name]
    module[name] = function (...args) {
      return urlOf(args) === SPEC_URL ? specRequest() : original.apply(this, args)
    }
  }
}

const originalFetch = globalThis.fetch
globalThis.fetch = async function fetch(input, init) {
  const url = input instanceof Request ? input.url : String(input)
  if (url === SPEC_URL) {
    return new Response(spec, { status: 200, headers: { "content-type": "text/yaml" } })
  }
  return originalFetch(input, init)
}

// --- 3. the report folder -----------------------------------------------------------------------

register("./preload-hooks.mjs", import.meta.url)

// --- 4. the results, one JSON line per API call --------------------------------------------------

const suite = new URL(
  "./node_modules/@ipfs-shipyard/pinning-service-compliance/dist/src/",
  import.meta.url,
)
const { ApiCall } = await import(new URL("ApiCall.js", suite))
const { globalReport } = await import(new URL("utils/report.js", suite))

function write(record) {
  appendFileSync(resultsPath, `${JSON.stringify(record)}\n`)
}

const ids = new WeakMap()
let nextId = 0
function idOf(call) {
  if (!ids.has(call)) ids.set(call, ++nextId)
  return ids.get(call)
}

function message(error) {
  if (error === undefined || error === null) return null
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error)
}

const runExpectations = ApiCall.prototype.runExpectations
ApiCall.prototype.runExpectations = async function (fromParent = false) {
  const ignored = this.parent != null && !fromParent // the parent runs it later
  const id = idOf(this)
  const result = await runExpectations.call(this, fromParent)
  if (ignored) return result
  // A call's own expectations come first; its children's are appended after them, and so are
  // its children's errors (the same objects).
  const own = this.expectationResults.slice(0, this.expectations.length)
  const childErrors = new Set(this.children.flatMap((child) => child.errors))
  const response = this.response
  write({
    kind: "call",
    id,
    parent: this.parent == null ? null : idOf(this.parent),
    title: this.title,
    successful: this.successful,
    expectations: own.map((e) => ({
      title: e.title,
      success: e.success,
      error: message(e.error),
    })),
    errors: this.errors
      .filter((e) => !childErrors.has(e))
      .map((e) => ({ title: e.title, error: message(e.error) })),
    schema_errors: (this.validationErrors?.details ?? []).map((detail) => detail.message),
    failure: message(this.failureReason),
    status: response == null ? null : response.status,
    body: this.text == null ? null : this.text.slice(0, 4000),
  })
  return result
}

process.on("exit", () => {
  write({
    kind: "summary",
    checks: globalReport.runExpectationsCallCount,
    passed: globalReport.passed,
    failed: globalReport.failed,
    expectations: globalReport.totalExpectationsCount,
    api_calls: globalReport.apiCallCount,
    refused,
  })
})
