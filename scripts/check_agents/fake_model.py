"""A fake model API on loopback for scripts/check-agents.

Speaks just enough of three wire formats for a real agent CLI to run one turn: it asks for one
shell call, `touch <path>` for the
`MARKER=<path>` named in the prompt, and once the call's result comes back it answers with a
short text and stops.

- Anthropic Messages (`POST /v1/messages`, streamed or not): Claude Code.
- OpenAI Responses (`POST /v1/responses`, streamed): Codex CLI.
- Gemini (`POST /v1beta/models/<model>:streamGenerateContent` / `:generateContent`): Gemini CLI.

Every request is appended to the log file as one JSON line (path, whether it carried a tool
result, and that result's text) so the checker can tell what the agent reported back.
"""

import json
import os
import re
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG = None
MARKER = re.compile(r"MARKER=([^\s\"\\]+)")
LOCK = threading.Lock()


def log(entry):
    with LOCK, open(LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def text_of(value):
    """Flattens a tool result (string, list of blocks, dict) to text."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(text_of(v) for v in value)
    if isinstance(value, dict):
        if "text" in value:
            return text_of(value["text"])
        if "output" in value:
            return text_of(value["output"])
        if "content" in value:
            return text_of(value["content"])
        return json.dumps(value)
    return str(value)


# ---------------------------------------------------------------- Anthropic Messages (Claude Code)
def anthropic_tool_result(body):
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            for block in content:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    return text_of(block.get("content", ""))
    return None


def anthropic_offers_bash(body):
    return any(t.get("name") == "Bash" for t in body.get("tools", []) or [])


def anthropic_blocks(body, command):
    result = anthropic_tool_result(body)
    if result is None and anthropic_offers_bash(body):
        return [{"type": "tool_use", "id": "toolu_" + uuid.uuid4().hex[:20], "name": "Bash",
                 "input": {"command": command, "description": "create the marker file"}}], "tool_use"
    return [{"type": "text", "text": "DONE"}], "end_turn"


def anthropic_sse(blocks, stop, model):
    msg_id = "msg_" + uuid.uuid4().hex[:20]
    usage = {"input_tokens": 10, "output_tokens": 10, "cache_creation_input_tokens": 0,
             "cache_read_input_tokens": 0}
    yield "message_start", {"type": "message_start", "message": {
        "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": usage}}
    for i, block in enumerate(blocks):
        if block["type"] == "text":
            yield "content_block_start", {"type": "content_block_start", "index": i,
                                          "content_block": {"type": "text", "text": ""}}
            yield "content_block_delta", {"type": "content_block_delta", "index": i,
                                          "delta": {"type": "text_delta", "text": block["text"]}}
        else:
            yield "content_block_start", {"type": "content_block_start", "index": i,
                                          "content_block": {"type": "tool_use", "id": block["id"],
                                                            "name": block["name"], "input": {}}}
            yield "content_block_delta", {"type": "content_block_delta", "index": i, "delta": {
                "type": "input_json_delta", "partial_json": json.dumps(block["input"])}}
        yield "content_block_stop", {"type": "content_block_stop", "index": i}
    yield "message_delta", {"type": "message_delta",
                            "delta": {"stop_reason": stop, "stop_sequence": None},
                            "usage": {"output_tokens": 10}}
    yield "message_stop", {"type": "message_stop"}


# ---------------------------------------------------------------- OpenAI Responses (Codex)
def responses_tool_result(body):
    items = body.get("input", [])
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and item.get("type") in (
                "function_call_output", "custom_tool_call_output", "local_shell_call_output"):
            return text_of(item.get("output", ""))
    return None


def responses_shell_tool(body):
    names = [t.get("name") for t in body.get("tools", []) or [] if isinstance(t, dict)]
    for name in ("shell", "shell_command", "exec_command"):
        if name in names:
            return name
    return None


def responses_events(body, command):
    resp_id = "resp_" + uuid.uuid4().hex[:20]
    model = body.get("model", "fake")
    result = responses_tool_result(body)
    tool = responses_shell_tool(body)
    if result is None and tool:
        if tool == "shell":
            args = {"command": ["bash", "-lc", command]}
        elif tool == "shell_command":
            args = {"command": command}
        else:
            # Asking to run outside the sandbox is what makes Codex ask for approval at all
            # (inside its workspace sandbox, "on-request" runs the command unasked).
            args = {"cmd": command, "sandbox_permissions": "require_escalated",
                    "justification": "create the marker file"}
        item = {"type": "function_call", "id": "fc_" + uuid.uuid4().hex[:20],
                "call_id": "call_" + uuid.uuid4().hex[:20], "name": tool,
                "arguments": json.dumps(args), "status": "completed"}
    else:
        item = {"type": "message", "id": "msg_" + uuid.uuid4().hex[:20], "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "DONE", "annotations": []}]}
    base = {"id": resp_id, "object": "response", "model": model, "output": []}
    yield "response.created", {"type": "response.created", "response": dict(base, status="in_progress")}
    yield "response.output_item.added", {"type": "response.output_item.added", "output_index": 0, "item": item}
    yield "response.output_item.done", {"type": "response.output_item.done", "output_index": 0, "item": item}
    done = dict(base, status="completed", output=[item],
                usage={"input_tokens": 10, "output_tokens": 10, "total_tokens": 20,
                       "input_tokens_details": {"cached_tokens": 0},
                       "output_tokens_details": {"reasoning_tokens": 0}})
    yield "response.completed", {"type": "response.completed", "response": done}


# ---------------------------------------------------------------- Gemini
def gemini_tool_result(body):
    for content in body.get("contents", []):
        for part in content.get("parts", []) or []:
            if isinstance(part, dict) and "functionResponse" in part:
                return text_of(part["functionResponse"].get("response", ""))
    return None


def gemini_offers_shell(body):
    for tool in body.get("tools", []) or []:
        for decl in tool.get("functionDeclarations", []) or []:
            if decl.get("name") == "run_shell_command":
                return True
    return False


def instance_of(schema):
    """A value matching a (Gemini-style) JSON schema: the CLI's side calls (its model router,
    its next-speaker check) ask for JSON and retry on anything else."""
    kind = str(schema.get("type", "OBJECT")).upper()
    if schema.get("enum"):
        return schema["enum"][0]
    if kind == "OBJECT":
        return {k: instance_of(v) for k, v in (schema.get("properties") or {}).items()}
    if kind == "ARRAY":
        return []
    if kind in ("INTEGER", "NUMBER"):
        return 10
    if kind == "BOOLEAN":
        return False
    return "fake"


def gemini_response(body, command):
    result = gemini_tool_result(body)
    config = body.get("generationConfig") or {}
    schema = config.get("responseJsonSchema") or config.get("responseSchema")
    if config.get("responseMimeType") == "application/json" and schema:
        part = {"text": json.dumps(instance_of(schema))}
    elif result is None and gemini_offers_shell(body):
        part = {"functionCall": {"name": "run_shell_command",
                                 "args": {"command": command, "description": "create the marker file"}}}
    else:
        part = {"text": "DONE"}
    return {"candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP",
                            "index": 0}],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 10, "totalTokenCount": 20},
            "modelVersion": "gemini-fake"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        found = MARKER.search(raw.decode("utf-8", "replace"))
        self.marker = found.group(1) if found else None
        command = f"touch {self.marker}" if found else "true"
        return body, command

    def send_json(self, value, status=200):
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_sse(self, events, named=True):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        for name, data in events:
            chunk = (f"event: {name}\n" if named else "") + f"data: {json.dumps(data)}\n\n"
            self.wfile.write(chunk.encode())
            self.wfile.flush()
        self.close_connection = True

    def do_GET(self):
        path = self.path.split("?")[0]
        log({"method": "GET", "path": path})
        if path.endswith("/models"):
            self.send_json({"data": [], "models": []})
        else:
            self.send_json({})

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        path = self.path.split("?")[0]
        body, command = self.body()
        if os.environ.get("FAKE_MODEL_DEBUG"):
            log({"path": path, "body": body})
        if path.endswith("/v1/messages/count_tokens"):
            return self.send_json({"input_tokens": 10})
        if path.endswith("/v1/messages"):
            log({"path": path, "marker": self.marker, "tool_result": anthropic_tool_result(body)})
            blocks, stop = anthropic_blocks(body, command)
            model = body.get("model", "fake")
            if body.get("stream"):
                return self.send_sse(anthropic_sse(blocks, stop, model))
            return self.send_json({"id": "msg_" + uuid.uuid4().hex[:20], "type": "message",
                                   "role": "assistant", "model": model, "content": blocks,
                                   "stop_reason": stop, "stop_sequence": None,
                                   "usage": {"input_tokens": 10, "output_tokens": 10}})
        if path.endswith("/responses"):
            log({"path": path, "marker": self.marker, "tool_result": responses_tool_result(body)})
            return self.send_sse(responses_events(body, command))
        if ":streamGenerateContent" in path or ":generateContent" in path:
            log({"path": path, "marker": self.marker, "tool_result": gemini_tool_result(body)})
            reply = gemini_response(body, command)
            if ":stream" in path:
                return self.send_sse([("", reply)], named=False)
            return self.send_json(reply)
        if ":countTokens" in path:
            return self.send_json({"totalTokens": 10})
        log({"path": path, "unknown": True})
        self.send_json({"error": {"message": f"fake model: no route {path}"}}, status=404)


def main():
    global LOG
    port, LOG = int(sys.argv[1]), sys.argv[2]
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"fake model on 127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
