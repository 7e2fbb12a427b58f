#!/usr/bin/env node
// Starts the third-party `mock-ipfs-pinning-service` on 127.0.0.1 only (its own CLI binds
// every interface) and prints {"port": N} once it listens. Used by pinsyncd's tests and demo.
//
//   node mock-psa.js --port 0 --token SECRET [--delegates a,b]
//
// The mock never changes a pin's status by itself. For tests this wrapper adds one route
// outside the API: POST /__admin/status {"cid": "...", "status": "pinned"} sets the status of
// the stored pin for that CID (the same thing RESEARCH.md does by re-posting with a prefix).
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
    const { cid, status } = req.body || {}
    const state = app.locals.state
    const existing = state.pins.get(cid)
    if (!existing) return res.status(404).json({ error: "no pin for that cid" })
    const pins = new Map(state.pins)
    pins.set(cid, { ...existing, status })
    app.locals.state = { ...state, pins }
    res.json({ ok: true })
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
