// Child process: proxy-chain's Server in direct mode (no upstream), on loopback.
import { createRequire } from 'node:module';
import { childSetup } from './resources.mjs';

const require = createRequire(import.meta.url);
const ProxyChain = require('proxy-chain');
const { send } = childSetup();

const server = new ProxyChain.Server({ port: 0, host: '127.0.0.1', verbose: false });
await server.listen();
process.on('message', (m) => {
  if (m?.type === 'stats') send({ type: 'stats', cpu: process.cpuUsage() });
});
send({ type: 'ready', port: server.port, version: require('proxy-chain/package.json').version });
