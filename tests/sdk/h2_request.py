"""Sends one HTTP/2 request (prior knowledge, no TLS) and prints the response
as JSON: {"status": ..., "body": ...}. Used for what HTTP/1 clients cannot
send, such as request trailers.

usage: h2_request.py PORT PATH BODY HEADER=VALUE... [--trailer NAME=VALUE]"""

import json
import socket
import sys

import h2.config
import h2.connection
import h2.events

port, path, body = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
headers, trailers = [], []
args = iter(sys.argv[4:])
for arg in args:
    if arg == "--trailer":
        trailers.append(tuple(next(args).split("=", 1)))
    else:
        headers.append(tuple(arg.split("=", 1)))

sock = socket.create_connection(("127.0.0.1", port))
conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
conn.initiate_connection()
stream = conn.get_next_available_stream_id()
conn.send_headers(stream, [(":method", "POST"), (":path", path), (":scheme", "http"),
                           (":authority", "gateway")] + headers)
if body:
    conn.send_data(stream, body, end_stream=not trailers)
if trailers:
    conn.send_headers(stream, trailers, end_stream=True)
sock.sendall(conn.data_to_send())

status, data, done = None, b"", False
sock.settimeout(20)
while not done:
    chunk = sock.recv(65536)
    if not chunk:
        break
    for event in conn.receive_data(chunk):
        if isinstance(event, h2.events.ResponseReceived):
            status = int(dict(event.headers)[b":status"])
        elif isinstance(event, h2.events.DataReceived):
            data += event.data
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
            done = True
    sock.sendall(conn.data_to_send())
print(json.dumps({"status": status, "body": data.decode(errors="replace")}))
