"""Runs the real agent CLIs through every set-up in docs/agents.md against a live gate.

Driven by scripts/check-agents (which installs the pinned CLIs and builds the binary). For each
set-up and each case a fresh HOME and project folder; a fake model API on loopback
(fake_model.py) asks for one shell call, `touch <marker>`; an "operator" thread decides over REST.

    deny      the operator rejects     -> the marker is absent, the approval is rejected
    approve   the operator approves    -> the marker exists, the approval is approved
    gate-down the gate is unreachable  -> the marker is absent
    timeout   nobody decides (hook_wait 3 s) -> the marker is absent, the approval timed out
    grant-scope  "Allow for this session" on one run, then a second run (a new session): the
              grant must not answer it -> the operator is asked again (and rejects)

Usage: run.py <cli-dir> <approval-gate binary> [set-up ...]
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
AGENT_TOKEN = "agent-token-check-agents-0123"
OPERATOR_TOKEN = "operator-token-check-agents-0123"
CASES = ["deny", "approve", "gate-down", "timeout", "grant-scope"]
RUN_LIMIT = 120  # seconds one CLI run may take


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, limit, what):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"gave up after {limit} s waiting for {what}")


def http(method, url, body=None, token=OPERATOR_TOKEN):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"{}")
    except OSError:
        return None


class Gate:
    """One approval-gate process with an agent and an operator token."""

    def __init__(self, binary, work, **settings):
        os.makedirs(work, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ,
                   APPROVAL_GATE__SERVER__BIND=f"127.0.0.1:{self.port}",
                   APPROVAL_GATE__STORE__PATH=os.path.join(work, "store"),
                   APPROVAL_GATE__FALLBACK__FILE_PATH=os.path.join(work, "notifications.jsonl"),
                   APPROVAL_GATE__AUTH__AGENT_TOKENS__CHECKER=AGENT_TOKEN,
                   APPROVAL_GATE__AUTH__OPERATOR_TOKENS__ALICE=OPERATOR_TOKEN)
        for key, value in settings.items():
            env[f"APPROVAL_GATE__{key.upper()}"] = value
        self.log = open(os.path.join(work, "gate.log"), "w")
        self.proc = subprocess.Popen([binary, "serve"], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        wait_until(lambda: http("GET", self.url + "/health/ready"), 30, "the gate to be ready")

    def approval_for(self, marker):
        page = http("GET", self.url + "/api/approvals?limit=500") or {}
        for approval in page.get("approvals", []):
            if marker in json.dumps(approval.get("tool_input")):
                return approval
        return None

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=20)
        self.log.close()


class SetUp:
    """How one documented set-up is installed in a fresh HOME and run."""

    name = ""
    prompt_tail = ""

    # a fixture under tests/fixtures/agents/ this set-up's hook input must match (key for key)
    fixture = None

    def __init__(self, clis, binary):
        self.clis, self.binary = clis, binary
        self.capture = None  # a file the hook's input is copied to, in the "approve" case

    def hook(self, command):
        """The documented hook command, with its stdin copied aside when capturing."""
        if self.capture:
            return f"tee -a {self.capture} | {command}"
        return command

    def env(self, home, gate_url):
        path = os.path.dirname(self.binary) + os.pathsep + os.environ["PATH"]
        return dict(os.environ, HOME=home, PATH=path, APPROVAL_GATE_URL=gate_url,
                    APPROVAL_GATE_TOKEN=AGENT_TOKEN, NO_COLOR="1")

    def prepare(self, home, project, gate_url, model_url):
        raise NotImplementedError

    def command(self, prompt):
        raise NotImplementedError


def write_json(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(value, f, indent=2)


CLAUDE_MATCHER = "Bash|Write|Edit|NotebookEdit|WebFetch|mcp__.*"


class Claude(SetUp):
    def claude(self):
        return ["node", os.path.join(self.clis, "node_modules/@anthropic-ai/claude-code/cli-wrapper.cjs")]

    def env(self, home, gate_url):
        return dict(super().env(home, gate_url), ANTHROPIC_BASE_URL=self.model_url,
                    ANTHROPIC_API_KEY="sk-fake", DISABLE_AUTOUPDATER="1",
                    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1")

    def prepare(self, home, project, gate_url, model_url):
        self.model_url = model_url

    def command(self, prompt):
        return self.claude() + ["-p", prompt]


class ClaudeHttpHook(Claude):
    name = "claude-code http hook"

    def prepare(self, home, project, gate_url, model_url):
        super().prepare(home, project, gate_url, model_url)
        write_json(os.path.join(project, ".claude/settings.json"), {"hooks": {"PreToolUse": [{
            "matcher": CLAUDE_MATCHER,
            "hooks": [{"type": "http", "url": f"{gate_url}/hooks/claude-code/pre-tool-use",
                       "headers": {"Authorization": "Bearer $APPROVAL_GATE_TOKEN"},
                       "allowedEnvVars": ["APPROVAL_GATE_TOKEN"], "timeout": 600,
                       "onFailure": "block"}]}]}})


class ClaudeCommandHook(Claude):
    name = "claude-code command hook"
    fixture = "claude-pre-tool-use-bash.json"

    def prepare(self, home, project, gate_url, model_url):
        super().prepare(home, project, gate_url, model_url)
        write_json(os.path.join(project, ".claude/settings.json"), {"hooks": {"PreToolUse": [{
            "matcher": CLAUDE_MATCHER,
            "hooks": [{"type": "command", "command": self.hook("approval-gate hook claude-code"),
                       "timeout": 600}]}]}})


class ClaudeMcp(Claude):
    name = "claude-code mcp prompt"

    def prepare(self, home, project, gate_url, model_url):
        super().prepare(home, project, gate_url, model_url)
        subprocess.run(self.claude() + ["mcp", "add", "approval-gate", "--", "approval-gate", "mcp"],
                       cwd=project, env=self.env(home, gate_url), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)

    def command(self, prompt):
        return self.claude() + ["-p", "--permission-prompt-tool",
                                "mcp__approval-gate__approval_prompt", prompt]


class Codex(SetUp):
    name = "codex"
    fixture = "codex-permission-request.json"

    def prepare(self, home, project, gate_url, model_url):
        self.codex_home = os.path.join(home, ".codex")
        os.makedirs(self.codex_home, exist_ok=True)
        with open(os.path.join(self.codex_home, "config.toml"), "w") as f:
            f.write('model = "fake-model"\nmodel_provider = "fake"\n[model_providers.fake]\n'
                    f'name = "fake"\nbase_url = "{model_url}/v1"\nwire_api = "responses"\n'
                    'env_key = "FAKE_MODEL_KEY"\n')
        write_json(os.path.join(self.codex_home, "hooks.json"), {"hooks": {"PermissionRequest": [{
            "hooks": [{"type": "command", "command": self.hook("approval-gate hook codex"), "timeout": 600}]}]}})
        subprocess.run(["git", "init", "-q", project], check=True)

    def env(self, home, gate_url):
        return dict(super().env(home, gate_url), CODEX_HOME=os.path.join(home, ".codex"),
                    FAKE_MODEL_KEY="fake")

    def command(self, prompt):
        # --approve-for-me: without it `codex exec` never asks (docs/agents.md); the bypass
        # stands in for the one-time `/hooks` review an interactive user does.
        return [os.path.join(self.clis, "node_modules/.bin/codex"), "exec", "--approve-for-me",
                "--dangerously-bypass-hook-trust", "--skip-git-repo-check", prompt]


class Gemini(SetUp):
    name = "gemini"
    fixture = "gemini-before-tool.json"

    def hook_command(self, home, gate_url):
        return "approval-gate hook gemini"

    def prepare(self, home, project, gate_url, model_url):
        self.model_url = model_url
        write_json(os.path.join(project, ".gemini/settings.json"), {"hooks": {"BeforeTool": [{
            "matcher": "run_shell_command|write_file|replace|web_fetch|mcp_.*",
            "hooks": [{"type": "command", "command": self.hook(self.hook_command(home, gate_url)),
                       "timeout": 600000}]}]}})
        write_json(os.path.join(home, ".gemini/settings.json"),
                   {"security": {"auth": {"selectedType": "gemini-api-key"}}})
        write_json(os.path.join(home, ".gemini/trustedFolders.json"), {project: "TRUST_FOLDER"})

    def env(self, home, gate_url):
        return dict(super().env(home, gate_url), GEMINI_API_KEY="fake",
                    GOOGLE_GEMINI_BASE_URL=self.model_url)

    def command(self, prompt):
        return [os.path.join(self.clis, "node_modules/.bin/gemini"), "-p", prompt,
                "--approval-mode", "yolo"]


class GeminiCi(Gemini):
    """The CI form: with GITHUB_SHA set Gemini strips the hook's environment, so the hook takes
    its URL and a token file as arguments."""

    name = "gemini ci (--url, --token-file)"

    def hook_command(self, home, gate_url):
        token_file = os.path.join(home, "agent-token")
        with open(token_file, "w") as f:
            f.write(AGENT_TOKEN + "\n")
        return f"approval-gate hook gemini --url {gate_url} --token-file {token_file}"

    def env(self, home, gate_url):
        env = dict(super().env(home, gate_url), GITHUB_SHA="0123456789abcdef")
        del env["APPROVAL_GATE_URL"], env["APPROVAL_GATE_TOKEN"]
        return env


SETUPS = {"claude-http": ClaudeHttpHook, "claude-command": ClaudeCommandHook,
          "claude-mcp": ClaudeMcp, "codex": Codex, "gemini": Gemini, "gemini-ci": GeminiCi}


def operator(gate, marker, decision, stop):
    """Decides the approval for this marker once it shows up."""
    while not stop.is_set():
        approval = gate.approval_for(marker)
        if approval and approval["status"] == "pending":
            http("POST", f"{gate.url}/api/approvals/{approval['id']}/decision",
                 {"decision": decision, "comment": "check-agents"})
            return
        time.sleep(0.2)


def run_cli(setup, work, home, project, gate, gate_url, marker, decision):
    """One CLI run asking for `touch <marker>`; the operator answers `decision` (or nobody)."""
    stop = threading.Event()
    decider = None
    if decision:
        decider = threading.Thread(target=operator, args=(gate, marker, decision, stop))
        decider.start()
    started = time.monotonic()
    with open(os.path.join(work, "cli.log"), "a") as out:
        try:
            proc = subprocess.run(setup.command(f"Create the marker file. MARKER={marker}"),
                                  cwd=project, env=setup.env(home, gate_url), stdin=subprocess.DEVNULL,
                                  stdout=out, stderr=subprocess.STDOUT, timeout=RUN_LIMIT)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = "killed after %d s" % RUN_LIMIT
    stop.set()
    if decider:
        decider.join()
    return code, time.monotonic() - started


# case -> (what the operator does, whether the tool runs, the approval's final status)
EXPECTED = {"deny": ("reject", False, "rejected"), "approve": ("approve", True, "approved"),
            "gate-down": (None, False, None), "timeout": (None, False, "timed_out"),
            # a later run (a new session) after "Allow for this session": the grant must not
            # answer it; the operator is asked again and rejects
            "grant-scope": ("reject", False, "rejected")}


def run_case(setup_cls, case, ctx):
    work = tempfile.mkdtemp(prefix=f"check-agents-{case}-", dir=ctx["scratch"])
    home, project = os.path.join(work, "home"), os.path.join(work, "project")
    os.makedirs(home)
    os.makedirs(project)
    marker = os.path.join(work, "marker")
    gate = ctx["timeout_gate"] if case == "timeout" else ctx["gate"]
    gate_url = ctx["dead_url"] if case == "gate-down" else gate.url
    setup = setup_cls(ctx["clis"], ctx["binary"])
    if case == "approve" and setup.fixture:
        setup.capture = os.path.join(ctx["scratch"], f"{setup_cls.__name__}.seen.json")
    setup.prepare(home, project, gate_url, ctx["model_url"])
    decision, want_ran, want_status = EXPECTED[case]
    granted = True
    if case == "grant-scope":
        first = os.path.join(work, "first-marker")
        run_cli(setup, work, home, project, gate, gate_url, first, "approve_session")
        granted = os.path.exists(first)
    code, took = run_cli(setup, work, home, project, gate, gate_url, marker, decision)
    ran = os.path.exists(marker)
    approval = None if case == "gate-down" else gate.approval_for(marker)
    status = approval["status"] if approval else None
    told = tool_result_for(ctx["model_log"], marker)
    # The agent must have asked for the call and carried on with its result (a CLI that died
    # before the call would also leave no marker).
    ok = (ran, status) == (want_ran, want_status) and told is not None and granted
    told_text = " ".join((told or "(none)").split())[:70]
    detail = (f"tool ran: {'yes' if ran else 'no'}; approval: {status or 'none'}"
              f"{'' if granted else ' (the first, granted run did not run)'}; exit {code}; "
              f"{took:.0f} s; the model was told: {told_text}")
    if ok:
        shutil.rmtree(work, ignore_errors=True)
    else:
        detail += f"; kept {work}"
    return setup_cls.name, case, ok, detail


def shape(value, depth=2):
    """The keys of a hook input, two levels deep: what a fixture must have in common with it."""
    if isinstance(value, dict) and depth:
        return {k: shape(v, depth - 1) for k, v in value.items()}
    return type(value).__name__


def compare_fixtures(scratch, setups):
    """Each captured hook input against its fixture: keys the CLI sends that the fixture lacks,
    and keys the fixture has that the CLI does not send (printed; a difference fails)."""
    fixtures = os.path.join(HERE, "..", "..", "tests", "fixtures", "agents")
    compared = failed = 0
    for setup in setups:
        seen_path = os.path.join(scratch, f"{setup.__name__}.seen.json")
        if not setup.fixture or not os.path.exists(seen_path):
            continue
        with open(os.path.join(fixtures, setup.fixture)) as f:
            fixture = shape(json.load(f))
        with open(seen_path) as f:
            text = f.read().lstrip()
        try:
            # The first input the hook got (a CLI may not end it with a newline).
            seen = shape(json.JSONDecoder().raw_decode(text)[0])
        except ValueError:
            compared += 1
            failed += 1
            print(f"FAIL  fixture {setup.fixture}: {setup.name}'s hook got no JSON input "
                  f"({len(text)} bytes)")
            continue
        missing = sorted(set(seen) - set(fixture))
        extra = sorted(set(fixture) - set(seen))
        tool_missing = sorted(set(seen.get("tool_input", {})) - set(fixture.get("tool_input", {})))
        ok = not missing and not extra and not tool_missing
        compared += 1
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'}  fixture {setup.fixture}: "
              + ("same keys as " + setup.name + " sends" if ok else
                 f"sent but not in the fixture {missing + ['tool_input.' + k for k in tool_missing]}, "
                 f"in the fixture but not sent {extra}"))
    return compared, failed


def tool_result_for(model_log, marker):
    """What the agent reported back to the model for this marker's shell call, if anything."""
    try:
        with open(model_log, encoding="utf-8") as f:
            for line in f:
                entry = json.loads(line)
                if entry.get("marker") == marker and entry.get("tool_result") is not None:
                    return entry["tool_result"]
    except OSError:
        pass
    return None


def version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip()
        return out.splitlines()[0] if out else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def main():
    clis, binary = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    chosen = sys.argv[3:] or list(SETUPS)
    scratch = tempfile.mkdtemp(prefix="check-agents-")
    if os.path.basename(binary) != "approval-gate":
        # The hooks call `approval-gate` by name, as docs/agents.md has them: a build under
        # another name (BIN=) is put on their PATH under that name.
        os.makedirs(os.path.join(scratch, "bin"))
        named = os.path.join(scratch, "bin", "approval-gate")
        os.symlink(binary, named)
        binary = named
    model_port = free_port()
    model_log = os.path.join(scratch, "model.log")
    model = subprocess.Popen([sys.executable, os.path.join(HERE, "fake_model.py"),
                              str(model_port), model_log], stdout=subprocess.DEVNULL)
    gate = timeout_gate = None
    try:
        gate = Gate(binary, os.path.join(scratch, "gate"))
        timeout_gate = Gate(binary, os.path.join(scratch, "timeout-gate"), agents__hook_wait="3s")
        ctx = {"clis": clis, "binary": binary, "scratch": scratch, "gate": gate,
               "timeout_gate": timeout_gate, "dead_url": f"http://127.0.0.1:{free_port()}",
               "model_url": f"http://127.0.0.1:{model_port}", "model_log": model_log}
        versions = {
            "Claude Code": version(["node", os.path.join(clis, "node_modules/@anthropic-ai/claude-code/cli-wrapper.cjs"), "--version"]),
            "Codex CLI": version([os.path.join(clis, "node_modules/.bin/codex"), "--version"]),
            "Gemini CLI": version([os.path.join(clis, "node_modules/.bin/gemini"), "--version"]),
        }
        print("tried with " + ", ".join(f"{k} {v}" for k, v in versions.items())
              + f", {version([binary, '--version'])}, on {time.strftime('%Y-%m-%d')}")
        jobs = [(SETUPS[name], case) for name in chosen for case in CASES]
        with ThreadPoolExecutor(max_workers=int(os.environ.get("CHECK_AGENTS_JOBS", "3"))) as pool:
            results = list(pool.map(lambda job: run_case(job[0], job[1], ctx), jobs))
    finally:
        for g in (gate, timeout_gate):
            if g:
                g.stop()
        model.terminate()
    width = max(len(r[0]) for r in results)
    checks, failed = compare_fixtures(scratch, [SETUPS[name] for name in chosen])
    checks += len(results)
    for name, case, ok, detail in results:
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'}  {name:<{width}}  {case:<11}  {detail}")
    print(f"{checks - failed} of {checks} passed")
    if not failed:
        shutil.rmtree(scratch, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
