// A socket.io-client session for the tests, written as the seed's apps use it:
//   node client.js <url> <token>
// Prints one JSON line per happening on stdout: {"type":"connected"}, {"type":"connect_error",...},
// {"type":"event","event":...,"data":...}, {"type":"ack",...}. Reads commands from stdin,
// one JSON object a line: {"join": "<room>"} or {"leave": "<room>"}.
"use strict";
const { io } = require("socket.io-client");
const readline = require("readline");

const [url, token] = process.argv.slice(2);
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const socket = io(url, { auth: { token }, transports: ["websocket"], reconnection: true });
socket.on("connect", () => say({ type: "connected", id: socket.id }));
socket.on("connect_error", (err) => {
  say({ type: "connect_error", message: err.message, data: err.data || null });
  if (!socket.active) process.exit(0); // refused by the server: no retry
});
socket.on("disconnect", (reason) => say({ type: "disconnected", reason }));
socket.onAny((event, data) => say({ type: "event", event, data }));

readline.createInterface({ input: process.stdin }).on("line", async (line) => {
  const command = JSON.parse(line);
  const [verb, room] = command.join ? ["join-room", command.join] : ["leave-room", command.leave];
  const reply = await socket.timeout(5000).emitWithAck(verb, room).catch((e) => ({ error: e.message }));
  say({ type: "ack", verb, room, reply });
}).on("close", () => { socket.close(); process.exit(0); });
