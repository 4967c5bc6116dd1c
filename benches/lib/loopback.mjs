// Pieces the sections share: a page server on 127.0.0.1, the emulator with
// client options pointing at it, and a started client; all registered for
// cleanup.
import http from 'node:http';
import { once } from 'node:events';
import { emulatorClientOptions } from '../../__test__/helpers.mjs';

/** An HTTP server on 127.0.0.1 with `handler`, closed at cleanup; its base URL. */
export async function serveLoopback(res, label, handler) {
  const server = http.createServer(handler);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  res.defer(
    label,
    () =>
      new Promise((r) => {
        server.closeAllConnections?.();
        server.close(() => r());
      }),
  );
  return `http://127.0.0.1:${server.address().port}`;
}

/** The emulator (no demo site), stopped at cleanup, and AluviaClient options for it. */
export async function startEmulator(sdk, res, extra = {}) {
  const emu = await sdk.startEmulator({ site: false });
  res.defer('emulator', () => emu.stop());
  const options = emulatorClientOptions(emu, extra);
  return { emu, options };
}

/** The emulator and a started AluviaClient on it (logLevel silent), both closed at cleanup. */
export async function startClient(sdk, res, extra = {}) {
  const { emu, options } = await startEmulator(sdk, res, { logLevel: 'silent', ...extra });
  const client = new sdk.AluviaClient(options);
  let connection = null;
  res.defer('aluvia client', () => (connection ? connection.close() : client.stop()));
  connection = await client.start();
  return { emu, client, connection };
}
