// The Node reference peer, in the style of the seed design (Express + Socket.IO 4 rooms).
//
//   node server.js <port> <data-dir>
//
// B2 (fan-out): a client emits "join" with room names, a publisher emits
// "publish" (room, payload) and the server does the room emit, io.to(room).emit().
// B3 (end to end): POST /api/orders persists the order (SQLite through sql.js, the
// WASM build, plus an fsync'ed append-only journal so that a 201 means "on disk",
// as our SQLite commit does) and emits "order:new" to the "admin" room;
// PUT /api/orders/:id/assign emits "order:assigned" to the "delivery:<agentId>" room.
// No login: the seed's JWT check is left out, which only makes this peer faster.
"use strict";
const fs = require("fs");
const path = require("path");
const http = require("http");
const crypto = require("crypto");
const express = require("express");
const { Server } = require("socket.io");
const initSqlJs = require("sql.js");

async function main() {
  const port = Number(process.argv[2]);
  const dataDir = process.argv[3];
  const SQL = await initSqlJs();
  const db = new SQL.Database();
  db.run("PRAGMA journal_mode=MEMORY");
  db.run("CREATE TABLE orders (id TEXT PRIMARY KEY, status TEXT, agent_id TEXT, body TEXT, created_at TEXT)");
  const insert = db.prepare("INSERT INTO orders VALUES (?, ?, ?, ?, ?)");
  const assign = db.prepare("UPDATE orders SET agent_id = ? WHERE id = ?");
  const journal = fs.openSync(path.join(dataDir, "orders.jsonl"), "a");
  const persist = (record) => {
    fs.writeSync(journal, JSON.stringify(record) + "\n");
    fs.fdatasyncSync(journal);
  };

  const app = express();
  app.use(express.json());
  const server = http.createServer(app);
  const io = new Server(server, { transports: ["websocket"], serveClient: false });

  app.post("/api/orders", (req, res) => {
    const { customer, items, notes } = req.body || {};
    if (!customer || !Array.isArray(items) || items.length === 0) {
      return res.status(400).json({ error: "customer and items are required" });
    }
    const now = new Date().toISOString();
    const order = {
      id: crypto.randomUUID(), status: "placed", agent_id: null, customer, items, notes: notes || "",
      total_cents: items.reduce((sum, i) => sum + i.quantity * i.unit_price_cents, 0),
      created_at: now, updated_at: now,
    };
    insert.run([order.id, order.status, null, JSON.stringify(order), now]);
    persist({ op: "create", order });
    io.to("admin").emit("order:new", order);
    res.status(201).json(order);
  });

  app.put("/api/orders/:id/assign", (req, res) => {
    const agentId = (req.body || {}).agent_id;
    assign.run([agentId, req.params.id]);
    if (db.getRowsModified() !== 1) return res.status(404).json({ error: "no such order" });
    persist({ op: "assign", id: req.params.id, agent_id: agentId });
    const order = { id: req.params.id, agent_id: agentId, notes: (req.body || {}).notes || "" };
    io.to(`delivery:${agentId}`).emit("order:assigned", order);
    io.to("admin").emit("order:assigned", order);
    res.json(order);
  });

  io.on("connection", (socket) => {
    socket.on("join", (rooms, ack) => {
      socket.join(rooms);
      if (ack) ack(true);
    });
    socket.on("publish", (room, payload) => io.to(room).emit("m", payload));
  });

  server.listen(port, "127.0.0.1", () => console.log(`listening on ${port}`));
  const stop = () => server.close(() => process.exit(0)) && setTimeout(() => process.exit(0), 2000);
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
