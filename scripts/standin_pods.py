"""Stand-in model-server pods for the demo: answer any request with a small OpenAI-style
completion naming the pod. Usage: standin_pods.py PORT [PORT ...]"""
import http.server
import json
import sys
import threading


class Pod(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.answer()

    def do_GET(self):
        self.answer()

    def answer(self):
        name = f"127.0.0.1:{self.server.server_port}"
        body = json.dumps({"object": "text_completion", "choices": [{"text": f"served by {name}"}]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


for port in sys.argv[1:]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), Pod)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"stand-in pod listening on 127.0.0.1:{port}", flush=True)
threading.Event().wait()
