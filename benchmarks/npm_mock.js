#!/usr/bin/env node
// The npm `mock-ipfs-pinning-service` (from peers/npm) on 127.0.0.1, wrapped by an outer
// express app that counts the requests it serves, for the benchmarks:
//
//   node benchmarks/npm_mock.js --port 0 --token SECRET
//
// prints {"port": N} once it listens. GET /__bench/stats answers the counts by operation
// (add, list, get, replace, delete, other), the seconds between the first and the last add,
// the pins stored and this process's CPU seconds; POST /__bench/reset zeroes the counts.
"use strict"

const path = require("path")
const npmDir = path.join(__dirname, "..", "peers", "npm", "node_modules")
const { setup } = require(path.join(npmDir, "mock-ipfs-pinning-service"))
const express = require(path.join(npmDir, "express"))

function option(name, fallback) {
  const index = process.argv.indexOf(`--${name}`)
  return index >= 0 && index + 1 < process.argv.length ? process.argv[index + 1] : fallback
}

function operation(method, url) {
  const p = url.split("?")[0]
  if (p === "/pins") return { POST: "add", GET: "list" }[method] || "other"
  if (/^\/pins\/[^/]+$/.test(p)) {
    return { GET: "get", POST: "replace", DELETE: "delete" }[method] || "other"
  }
  return "other"
}

async function main() {
  const port = Number(option("port", "0"))
  const token = option("token", null)
  const mock = await setup({ token, loglevel: "error" })
  let counts = {}
  let firstAdd = null
  let lastAdd = null
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

  const server = outer.listen(port, "127.0.0.1", () => {
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
