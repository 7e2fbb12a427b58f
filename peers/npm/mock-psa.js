#!/usr/bin/env node
// Starts the third-party `mock-ipfs-pinning-service` on 127.0.0.1 only (its own CLI binds
// every interface) and prints {"port": N} once it listens. Used by pinsyncd's tests and demo.
//
//   node mock-psa.js --port 0 --token SECRET [--delegates a,b]
//
// The mock never changes a pin's status by itself. For tests this wrapper adds one route
// outside the API: POST /__admin/status {"cid": "..." or "cids": [...], "status": "pinned"} sets
// the status of the stored pins for those CIDs (what RESEARCH.md does by re-posting with a
// name prefix, without sending a second add).
"use strict"

const { setup } = require("mock-ipfs-pinning-service")
const express = require("express")

function option(name, fallback) {
  const index = process.argv.indexOf(`--${name}`)
  return index >= 0 && index + 1 < process.argv.length ? process.argv[index + 1] : fallback
}

async function main() {
  const port = Number(option("port", "0"))
  const token = option("token", null)
  const delegates = option("delegates", null)
  const app = await setup({ token, delegates, loglevel: "error" })

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
  app.use("/__admin", admin)

  const server = app.listen(port, "127.0.0.1", () => {
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
