#!/usr/bin/env node
// Starts the third-party `mock-ipfs-pinning-service` on 127.0.0.1 only (its own CLI binds
// every interface) and prints {"port": N} once it listens. Used by pinsyncd's tests, demo
// and benchmarks.
//
//   node mock-psa.js --port 0 --token SECRET [--delegates a,b] [--count]
//
// Delegates are what a client's node is asked to dial. The package's own default is an
// address in a public range (203.0.113.42), so this wrapper hands out a loopback delegate
// unless told otherwise, and refuses any delegate that is not on 127.0.0.0/8: nothing that
// runs here is ever asked to dial off this machine.
//
// The mock never changes a pin's status by itself. For tests this wrapper adds one route
// outside the API: POST /__admin/status {"cid": "..." or "cids": [...], "status": "pinned"} sets
// the status of the stored pins for those CIDs (what RESEARCH.md does by re-posting with a
// name prefix, without sending a second add).
//
// With --count (the benchmarks), the requests it serves are counted: GET /__bench/stats
// answers the counts by operation (add, list, get, replace, delete, other), the seconds
// between the first and the last add, the pins stored and this process's CPU seconds;
// POST /__bench/reset zeroes the counts.
"use strict"

const { setup } = require("mock-ipfs-pinning-service")
const express = require("express")

// A well-formed multiaddr on loopback; no peer listens there, so a dial fails at once.
const LOOPBACK_DELEGATE =
  "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWGBoSpdSqfj8YYGCBkNPjRgyJyymfmx3hmhxTTJ9nh8KX"

function loopbackOnly(delegates) {
  for (const address of delegates.split(",")) {
    if (!/^\/ip4\/127\.\d+\.\d+\.\d+\/|^\/dns4\/localhost\//.test(address)) {
      throw new Error(`mock-psa.js: delegate ${address} is not on loopback; refused`)
    }
  }
  return delegates
}

function option(name, fallback) {
  const index = process.argv.indexOf(`--${name}`)
  return index >= 0 && index + 1 < process.argv.length ? process.argv[index + 1] : fallback
}

function adminRoutes(app) {
  const admin = express.Router()
  admin.use(express.json())
  admin.post("/status", (req, res) => {
    const { cid, cids, status } = req.body || {}
    const wanted = cids || [cid]
    const state = app.locals.state
    const pins = new Map(state.pins)
    let changed = 0
    for (const one of wanted) {
      const existing = pins.get(one)
      if (existing) {
        pins.set(one, { ...existing, status })
        changed += 1
      }
    }
    if (!changed) return res.status(404).json({ error: "no pin for those cids" })
    app.locals.state = { ...state, pins }
    res.json({ changed })
  })
  return admin
}

function operation(method, url) {
  const p = url.split("?")[0]
  if (p === "/pins") return { POST: "add", GET: "list" }[method] || "other"
  if (/^\/pins\/[^/]+$/.test(p)) {
    return { GET: "get", POST: "replace", DELETE: "delete" }[method] || "other"
  }
  return "other"
}

// An outer app that counts the requests before the mock serves them.
function counting(mock) {
  let counts, firstAdd, lastAdd
  const reset = () => {
    counts = { add: 0, list: 0, get: 0, replace: 0, delete: 0, other: 0 }
    firstAdd = lastAdd = null
  }
  reset()
  const outer = express()
  outer.get("/__bench/stats", (req, res) => {
    const cpu = process.cpuUsage()
    res.json({
      psa: counts,
      psa_add_span: firstAdd === null ? 0 : Number(lastAdd - firstAdd) / 1e9,
      psa_pins: mock.locals.state.pins.size,
      cpu: (cpu.user + cpu.system) / 1e6,
    })
  })
  outer.post("/__bench/reset", (req, res) => {
    reset()
    res.json({})
  })
  outer.use((req, res, next) => {
    const op = operation(req.method, req.url)
    counts[op] += 1
    if (op === "add") {
      const now = process.hrtime.bigint()
      if (firstAdd === null) firstAdd = now
      lastAdd = now
    }
    next()
  })
  outer.use(mock)
  return outer
}

async function main() {
  const port = Number(option("port", "0"))
  const token = option("token", null)
  const delegates = loopbackOnly(option("delegates", LOOPBACK_DELEGATE))
  const app = await setup({ token, delegates, loglevel: "error" })
  app.use("/__admin", adminRoutes(app))
  const served = process.argv.includes("--count") ? counting(app) : app

  const server = served.listen(port, "127.0.0.1", () => {
    process.stdout.write(JSON.stringify({ port: server.address().port }) + "\n")
  })
  const stop = () => server.close(() => process.exit(0))
  process.on("SIGTERM", stop)
  process.on("SIGINT", stop)
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
