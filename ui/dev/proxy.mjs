// Development proxy: plain HTTP on 127.0.0.1:PORT to ctld's Unix socket, byte for byte
// (websocket upgrades included), so the UI can be tried in a browser against a local
// daemon without the HTTPS listener. Usage: node dev/proxy.mjs /path/to/unix.socket [PORT]
import net from 'node:net';

const [socketPath, port = '8080'] = process.argv.slice(2);
if (!socketPath) {
  console.error('usage: node dev/proxy.mjs /path/to/unix.socket [PORT]');
  process.exit(2);
}
const server = net.createServer((client) => {
  const upstream = net.connect(socketPath);
  client.pipe(upstream);
  upstream.pipe(client);
  const close = () => {
    client.destroy();
    upstream.destroy();
  };
  client.on('error', close);
  upstream.on('error', close);
});
server.listen(Number(port), '127.0.0.1', () => {
  console.log(`proxy: http://127.0.0.1:${port}/ui/ -> ${socketPath}`);
});
