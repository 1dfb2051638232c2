"""End to end on the ktrdr reference system (examples/ktrdr): FastAPI on
uvicorn and httpx services with no tracing code, driven through the ktrdr
CLI, exported as OTLP to the independent receiver. Each call carries a
business id (request_id, in the query string) that every service logs:
that id, not sonde's own linking, says which spans belong together, so
every exported parent can be checked.

The api runs two ways: on uvicorn (one asyncio event loop serves every
request) and thread per request (the standard library's
ThreadingHTTPServer)."""
import json
import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import ROOT, Agent, Receiver
from ports import free_port_block

KTRDR = ROOT / "examples" / "ktrdr"

# command -> (api route, downstream span name, downstream service prefix)
COMMANDS = {
    ("models", "train", "AAPL", "momentum"):
        ("POST /api/v1/training/start", "POST /training/start", "ktrdr-training-worker-"),
    ("backtest", "run", "AAPL", "momentum"):
        ("POST /api/v1/backtests/start", "POST /backtests/start", "ktrdr-backtest-worker-"),
    ("data", "load", "AAPL", "1d"):
        ("POST /api/v1/data/load", "POST /data/historical", "ktrdr-ib-host-service"),
    ("data", "show", "AAPL", "1d"):
        ("GET /api/v1/data/AAPL/1d", None, None),
}
WORKERS_PER_KIND = 2  # examples/ktrdr/run.sh
# The function each kind of worker runs its jobs in (examples/ktrdr/worker.py).
JOBS = {"training": "_training_job", "backtest": "_backtest_job"}
KIND_COMMANDS = {"training": ("models", "train", "AAPL", "momentum"),
                 "backtest": ("backtest", "run", "AAPL", "momentum")}
JOB_SECONDS = 0.1
# What the agent says at start on a kernel without uprobe_multi links
# (before Linux 6.6: Debian 12's 6.1): it sees the jobs run in threads
# (backtests) but not those run as asyncio tasks (training).
NO_TASK_JOBS = "this kernel has no uprobe_multi links"
# Each run's parent accuracy, beside the build's other reports (bench.json).
RESULTS = Path(os.environ.get("SONDE_KTRDR_RESULTS", ROOT / "build" / "ktrdr-results.json"))


class Ktrdr:
    def __init__(self, workdir, api_server):
        self.base = free_port_block(7)
        self.env = dict(os.environ, KTRDR_PORT_BASE=str(self.base),
                        KTRDR_RUN_DIR=str(Path(workdir) / f"ktrdr-{api_server}"),
                        KTRDR_API_SERVER=api_server, KTRDR_JOB_SECONDS=str(JOB_SECONDS),
                        KTRDR_API_URL=f"http://127.0.0.1:{self.base}")
        subprocess.run([str(KTRDR / "run.sh"), "start"], env=self.env, check=True, timeout=120)
        self.run_dir = Path(self.env["KTRDR_RUN_DIR"])

    def call(self, command, request_id):
        return subprocess.Popen([str(KTRDR / "ktrdr"), "--request-id", request_id, *command],
                                env=self.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)

    def logged_by(self, request_id):
        """Services whose log names the request id (the ground truth)."""
        return {log.stem for log in self.run_dir.glob("*.log")
                if f"request_id={request_id} " in log.read_text()}

    def stop(self):
        subprocess.run([str(KTRDR / "run.sh"), "stop"], env=self.env, check=True, timeout=30)


@pytest.fixture(scope="module", params=["uvicorn", "threaded"])
def system(request, workdir):
    """The agent, exporting to a receiver, and the ktrdr system under it."""
    rx = Receiver(workdir, http_port=0)
    agent = Agent(workdir, name=f"sonde-ktrdr-{request.param}", extra_env={
        "OTEL_TRACES_EXPORTER": "otlp,tree",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{rx.http_port}",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "SONDE_KEEP_QUERY": "1",
        "SONDE_EXCLUDE_COMM": "node",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_BLRP_SCHEDULE_DELAY": "200",
        "SONDE_ENTRY_POINTS": ",".join(f"python:{job}" for job in JOBS.values()),
        "SONDE_COMMAND_SPANS": "ktrdr",
    })
    ktrdr = Ktrdr(workdir, request.param)
    yield request.param, agent, rx, ktrdr
    ktrdr.stop()
    assert agent.stop() == 0, agent.err_path.read_text()
    rx.stop()


def task_jobs_seen(agent):
    """Whether training jobs, asyncio tasks, are seen. One that is not has
    no span, and what it does after its request was answered belongs to no
    trace: its calls are roots and its lines carry no ids, never wrong ones."""
    return NO_TASK_JOBS not in agent.err_path.read_text()


def job_seen(kind, task_jobs):
    return task_jobs or kind != "training"


def request_id_of(span):
    """The business id a span carries: in its query string, or, for the
    CLI's command span, in its arguments."""
    match = (re.search(r"request_id=([0-9a-z-]+)", span["attributes"].get("url.query", ""))
             or re.search(r"--request-id ([0-9a-z-]+)",
                          span["attributes"].get("process.command_args", "")))
    return match.group(1) if match else None


def received(rx):
    return [s for r in rx.requests() if r["accepted"] for s in r["spans"]]


def run_calls(ktrdr, calls, concurrent):
    procs = []
    for command, rid in calls:
        procs.append(ktrdr.call(command, rid))
        if not concurrent:
            assert procs[-1].wait(timeout=60) == 0, procs[-1].stderr.read()
    for proc in procs:
        assert proc.wait(timeout=60) == 0, proc.stderr.read()


def fans_out(command):
    """A dispatch first asks every worker of its kind for its health."""
    return (COMMANDS[command][2] or "").endswith("-worker-")


def expected_count(command):
    """The command's span, its call and the api's request, the api's call
    and what it reached, the health checks of a fan-out."""
    _, down_name, down_service = COMMANDS[command]
    return 3 + (2 if down_name else 0) + (2 * WORKERS_PER_KIND if fans_out(command) else 0)


def wait_for_spans(rx, calls, timeout=30):
    want = {rid: expected_count(command) for command, rid in calls}
    deadline = time.time() + timeout
    while True:
        spans = received(rx)
        got = {}
        for s in spans:
            rid = request_id_of(s)
            if rid in want:
                got[rid] = got.get(rid, 0) + 1
        if all(got.get(rid, 0) >= n for rid, n in want.items()) or time.time() > deadline:
            return spans
        time.sleep(0.2)


def one(spans, kind, service, name=None):
    """The one span of that kind, service (a prefix when it ends in "-")
    and name."""
    found = [s for s in spans if s["kind"] == f"SPAN_KIND_{kind}"
             and (s["resource"]["service.name"] == service or
                  service.endswith("-") and s["resource"]["service.name"].startswith(service))
             and (name is None or s["name"] == name)]
    assert len(found) == 1, f"{kind} {service} {name}: {found}"
    return found[0]


def check_call(command, rid, spans, ktrdr):
    """The expected tree of one call, from its business id. Returns
    (right parents, parent links expected, problems)."""
    route, down_name, down_service = COMMANDS[command]
    mine = [s for s in spans if request_id_of(s) == rid]
    assert len(mine) == expected_count(command), f"{rid}: {json.dumps(mine, indent=1)}"
    cmd = one(mine, "INTERNAL", "ktrdr", "ktrdr " + " ".join(command[:2]))
    cli = one(mine, "CLIENT", "ktrdr")
    api = one(mine, "SERVER", "ktrdr-api", route)
    links = [(cmd, cli), (cli, api)]
    if down_name:
        call = one(mine, "CLIENT", "ktrdr-api", "POST")
        down = one(mine, "SERVER", down_service, down_name)
        assert down["resource"]["service.name"] in ktrdr.logged_by(rid)
        links += [(api, call), (call, down)]
    if fans_out(command):
        for check in [s for s in mine if s["kind"] == "SPAN_KIND_CLIENT" and s["name"] == "GET"]:
            port = check["attributes"]["server.port"]
            worker = one([s for s in mine if s["attributes"].get("server.port") == port],
                         "SERVER", down_service, "GET /health")
            links += [(api, check), (check, worker)]
    problems = []
    if cmd["parent_span_id"]:
        problems.append(f"{rid}: the command's span has a parent")
    right = 0
    for parent, child in links:
        if child["parent_span_id"] == parent["span_id"] and child["trace_id"] == parent["trace_id"]:
            right += 1
        elif child["parent_span_id"]:
            problems.append(f"{rid}: WRONG parent for {child['name']}")
        else:
            print(f"{rid}: no parent for {child['resource']['service.name']} {child['name']}")
    trace = [s for s in spans if s["trace_id"] == cli["trace_id"]]
    job = [s for s in trace if is_job_span(s) or is_report(s)]
    problems += check_job_subtree(rid, down if down_name else None, job)
    if len(trace) - len(job) > len(links) + 1:
        problems.append(f"{rid}: trace of {len(trace)} spans, {len(links) + 1} expected "
                        f"besides {len(job)} of its job")
    return right, len(links), problems


def is_job_span(span):
    return span["kind"] == "SPAN_KIND_INTERNAL" and span["name"] in JOBS.values()


def is_report(span):
    return re.fullmatch(r"/api/v1/operations/[0-9a-f]+/status",
                        span["attributes"].get("url.path", "")) is not None


def check_job_subtree(rid, down, job):
    """What of a call's job has arrived in its trace: the job's span under
    the worker's request, each status report's call under the job's span,
    the api's request under that call. The job's span is made as the job
    ends, after its first report."""
    problems = []
    by_id = {s["span_id"]: s for s in job}
    for s in job:
        parent = by_id.get(s["parent_span_id"])
        if is_job_span(s):
            ok = down is not None and s["parent_span_id"] == down["span_id"]
        elif s["kind"] == "SPAN_KIND_CLIENT":
            ok = parent is None or is_job_span(parent)
        else:
            ok = parent is None or parent["kind"] == "SPAN_KIND_CLIENT"
        if not ok or not s["parent_span_id"]:
            problems.append(f"{rid}: WRONG parent for {s['name']} of its job")
    return problems


def record(variant, mode, right, links, oversized):
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[f"{variant}/{mode}"] = {"right_parents": right, "parent_links": links,
                                    "accuracy": round(right / links, 4),
                                    "oversized_traces": oversized}
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\n{variant} {mode}: {right}/{links} right parents, {oversized} oversized traces")


def run_and_check(system, calls, concurrent):
    variant, agent, rx, ktrdr = system
    run_calls(ktrdr, calls, concurrent)
    spans = wait_for_spans(rx, calls)
    right = links = oversized = 0
    problems = []
    for command, rid in calls:
        r, n, p = check_call(command, rid, spans, ktrdr)
        right, links = right + r, links + n
        oversized += any("spans," in x for x in p)
        problems += p
    record(variant, "concurrent-16" if concurrent else "sequential", right, links, oversized)
    return right, links, problems


def calls_of(count, tag):
    commands = list(COMMANDS)
    return [(commands[i % len(commands)], f"{tag}-{uuid.uuid4().hex[:12]}") for i in range(count)]


def test_sequential_calls_give_exact_trees(system):
    right, links, problems = run_and_check(system, calls_of(8, "seq"), concurrent=False)
    assert not problems
    assert right == links


def test_sixteen_concurrent_calls_never_get_a_wrong_parent(system):
    right, links, problems = run_and_check(system, calls_of(16, "par"), concurrent=True)
    assert not problems, problems
    assert right == links


def test_tree_view_prints_each_trace(system):
    """A training job's tree, or a backtest's (a thread) where the kernel
    lets the agent see no asyncio task's job."""
    variant, agent, rx, ktrdr = system
    kind = "training" if task_jobs_seen(agent) else "backtest"
    command = KIND_COMMANDS[kind]
    route, down_name, _ = COMMANDS[command]
    worker = f"ktrdr-{kind}-worker-[12]"
    rid = f"tree-{uuid.uuid4().hex[:12]}"
    run_calls(ktrdr, [(command, rid)], concurrent=False)
    spans = wait_for_spans(rx, [(command, rid)])
    cli = one([s for s in spans if request_id_of(s) == rid], "CLIENT", "ktrdr")
    deadline = time.time() + 15
    while cli["trace_id"] not in agent.out_path.read_text() and time.time() < deadline:
        time.sleep(0.2)
    text = agent.out_path.read_text()
    printed = text[text.index(f"trace {cli['trace_id']}"):].split("\n\n")[0].splitlines()
    print("\n".join(printed))
    lines = [line for line in printed if "» " in line]
    block = [line for line in printed if "» " not in line]
    # The command at the root; the health checks, made by the tasks of a
    # gather, under the request that awaited them, in the order they
    # started; the job under the worker's request, its two status reports
    # under it.
    assert re.match(r"trace [0-9a-f]{32} \(14 spans, [0-9.]+ ms\)", block[0]), block
    assert re.match(r"└─ ktrdr: ktrdr " + " ".join(command[:2]) + r" \(INTERNAL\) [0-9.]+ ms$",
                    block[1]), block
    assert re.match(r" {3}└─ ktrdr: POST \(CLIENT\) [0-9.]+ ms 200", block[2]), block
    assert re.match(r" {6}└─ ktrdr-api: " + route + r" \(SERVER\) [0-9.]+ ms 200",
                    block[3]), block
    for at in (4, 6):
        assert re.match(r" {9}├─ ktrdr-api: GET \(CLIENT\) [0-9.]+ ms 200", block[at]), block
        assert re.match(r" {9}│  └─ " + worker + r": GET /health \(SERVER\) "
                        r"[0-9.]+ ms 200", block[at + 1]), block
    assert re.match(r" {9}└─ ktrdr-api: POST \(CLIENT\) [0-9.]+ ms 200", block[8]), block
    assert re.match(r" {12}└─ " + worker + ": " + down_name + r" \(SERVER\) "
                    r"[0-9.]+ ms 200", block[9]), block
    assert re.match(r" {15}└─ " + worker + ": " + JOBS[kind] + r" \(INTERNAL\) "
                    r"[0-9.]+ ms$", block[10]), block
    for at, branch, under in ((11, "├─", "│ "), (13, "└─", "  ")):
        assert re.match(r" {18}" + branch + " " + worker + r": POST \(CLIENT\) "
                        r"[0-9.]+ ms 200", block[at]), block
        assert re.match(r" {18}" + under + r" └─ ktrdr-api: POST /api/v1/operations/\{id\}/status "
                        r"\(SERVER\) [0-9.]+ ms 200", block[at + 1]), block
    assert len(block) == 15, block
    # Each service's log lines right under the span they were written for:
    # the api's under its SERVER span (before its call to the worker), the
    # worker's under its own, the job's progress under the job's span.
    def under(span_line, pattern, count):
        found = [line for line in lines if re.match(pattern, line)]
        at = printed.index(span_line) + 1
        assert len(found) == count and printed[at:at + count] == found, printed

    under(block[3], r" {10}» .* ktrdr-api request_id=" + rid + " dispatch " + kind, 1)
    under(block[9], r" {16}» .* " + worker + " request_id=" + rid + " operation=[0-9a-f]+$", 1)
    under(block[10], r" {19}» .* " + worker + " request_id=" + rid + " operation=", 5)


def lines_logged(ktrdr, rid):
    """{service: lines naming the request id}, from the services' own logs."""
    out = {}
    for log in ktrdr.run_dir.glob("*.log"):
        n = sum(1 for line in log.read_text().splitlines() if f"request_id={rid} " in line)
        if n:
            out[log.stem] = n
    return out


def check_log_records(calls, spans, records, ktrdr, task_jobs):
    """Every line naming a request id is a record, once; one written while
    its service served the request carries that request's SERVER span;
    one written by a job after the answer (a training job's asyncio task,
    a backtest's thread, which nothing awaits) carries its job's span, or
    no ids where the job is not seen."""
    problems = []
    for _, rid in calls:
        mine = [r for r in records if f"request_id={rid} " in (r["body"] or "")]
        got = {}
        for r in mine:
            service = r["resource"]["service.name"]
            got[service] = got.get(service, 0) + 1
            if " training job " in r["body"] and not task_jobs:
                if r["trace_id"] or r["span_id"]:
                    problems.append(f"{rid}: line of an unseen job has {r['trace_id']}/"
                                    f"{r['span_id']}")
                continue
            if " job " in r["body"]:
                job = job_of(rid, spans)
                if not job or (r["trace_id"], r["span_id"]) != (job["trace_id"], job["span_id"]):
                    problems.append(f"{rid}: job line of {service} has {r['trace_id']}/"
                                    f"{r['span_id']}, its job {job and job['span_id']}")
                continue
            server = [s for s in spans if request_id_of(s) == rid and s["kind"] == "SPAN_KIND_SERVER"
                      and s["resource"]["service.name"] == service
                      and s["name"] != "GET /health"]  # a health check logs nothing
            if len(server) != 1:
                problems.append(f"{rid}: {len(server)} server spans in {service}")
            elif (r["trace_id"], r["span_id"]) != (server[0]["trace_id"], server[0]["span_id"]):
                problems.append(f"{rid}: line of {service} has {r['trace_id']}/{r['span_id']}, "
                                f"its request {server[0]['trace_id']}/{server[0]['span_id']}")
            if r["attributes"].get("log.iostream") != "stderr":
                problems.append(f"{rid}: {r['attributes']}")
        if got != lines_logged(ktrdr, rid):
            problems.append(f"{rid}: records {got}, lines {lines_logged(ktrdr, rid)}")
    return problems


def job_of(rid, spans):
    """The span of the job a call started: under the worker's request."""
    down = [s for s in spans if request_id_of(s) == rid and s["kind"] == "SPAN_KIND_SERVER"
            and s["name"] in ("POST /training/start", "POST /backtests/start")]
    jobs = [s for s in spans if down and is_job_span(s) and s["parent_span_id"] == down[0]["span_id"]]
    return jobs[0] if len(jobs) == 1 else None


def wait_for_jobs(rx, calls, task_jobs, timeout=20):
    """Every span, once each job the calls started that is seen has ended
    (its span is made then)."""
    want = [rid for command, rid in calls
            if fans_out(command) and job_seen(kind_of(command), task_jobs)]
    deadline = time.time() + timeout
    while True:
        spans = received(rx)
        if all(job_of(rid, spans) for rid in want) or time.time() > deadline:
            return spans
        time.sleep(0.2)


def kind_of(command):
    """The kind of job a dispatching command starts."""
    return COMMANDS[command][2][len("ktrdr-"):-len("-worker-")]


def wait_for_records(rx, ktrdr, calls, timeout=20):
    deadline = time.time() + timeout
    while True:
        records = rx.log_records()
        want = sum(sum(lines_logged(ktrdr, rid).values()) for _, rid in calls)
        got = sum(1 for r in records for _, rid in calls if f"request_id={rid} " in (r["body"] or ""))
        if got >= want or time.time() > deadline:
            return records
        time.sleep(0.2)


@pytest.mark.parametrize("concurrent", [False, True], ids=["sequential", "concurrent-16"])
def test_log_lines_carry_the_trace_of_their_request(system, concurrent):
    variant, agent, rx, ktrdr = system
    task_jobs = task_jobs_seen(agent)
    calls = calls_of(16 if concurrent else 8, "log")
    run_calls(ktrdr, calls, concurrent)
    wait_for_spans(rx, calls)
    spans = wait_for_jobs(rx, calls, task_jobs)  # the workers' jobs log after their answer
    records = wait_for_records(rx, ktrdr, calls)
    problems = check_log_records(calls, spans, records, ktrdr, task_jobs)
    assert not problems, "\n".join(problems)
    named = [r for r in records for _, rid in calls if f"request_id={rid} " in (r["body"] or "")
             and (task_jobs or " training job " not in r["body"])]
    jobs = [r for r in named if " job " in r["body"]]
    print(f"\n{variant}: {len(named)} lines of {len(calls)} calls, all with their span's ids, "
          f"{len(jobs)} written by jobs")
    assert all(r["trace_id"] for r in named) and len(named) - len(jobs) >= len(calls) and jobs


def spans_named(rx, path_prefix, count, timeout=20):
    """Spans whose url.path starts with the prefix, once there are count."""
    deadline = time.time() + timeout
    while True:
        found = [s for s in received(rx)
                 if s["attributes"].get("url.path", "").startswith(path_prefix)]
        if len(found) >= count or time.time() > deadline:
            return found
        time.sleep(0.2)


def poll_spans(rx, op_id, timeout=20):
    """The spans of an operation's polls (its exact path), once every
    server span's client span has arrived too: the command's client span
    ends, and is exported, after the api's server span."""
    path = f"/api/v1/operations/{op_id}"
    deadline = time.time() + timeout
    while True:
        polls = [s for s in received(rx) if s["attributes"].get("url.path") == path]
        clients = [s for s in polls if s["kind"] == "SPAN_KIND_CLIENT"]
        if (clients and len(clients) * 2 == len(polls)) or time.time() > deadline:
            return polls
        time.sleep(0.2)


def parent_of(span, spans):
    return next((s for s in spans if s["span_id"] == span["parent_span_id"]), None)


def check_unseen_job(rx, op_id, job):
    """A job the agent cannot see has no span, and its status reports,
    made after its request was answered, start traces of their own."""
    assert job is None, job
    reports = spans_named(rx, f"/api/v1/operations/{op_id}/status", 4)
    calls = [s for s in reports if s["kind"] == "SPAN_KIND_CLIENT"]
    assert len(reports) == 4 and len(calls) == 2, reports
    for server in (s for s in reports if s["kind"] == "SPAN_KIND_SERVER"):
        call = parent_of(server, calls)
        assert call and not call["parent_span_id"], (server, call)


def test_waiting_commands_follow_their_operation_to_its_end(system):
    """`--wait` polls the api until the job ends; a job with an unknown
    strategy fails and so does its command. The polls are each under the
    CLI's call; the job (an asyncio task, or a thread, that nothing
    awaits) is a span under the worker's request, and its status reports
    reach the api under the job's span. A training job that raises ends in
    ERROR with the exception's type; a thread's exception is not seen."""
    variant, agent, rx, ktrdr = system
    runs = []
    for i in range(16):
        group, action = (("models", "train"), ("backtest", "run"))[i % 2]
        strategy = "nosuch" if i % 8 == 7 else "momentum"
        rid = f"wait-{uuid.uuid4().hex[:12]}"
        runs.append((rid, strategy, subprocess.Popen(
            [str(KTRDR / "ktrdr"), "--request-id", rid, group, action, "AAPL", strategy, "--wait"],
            env=ktrdr.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    operations = {}
    for rid, strategy, proc in runs:
        out, err = proc.communicate(timeout=60)
        operation = json.loads(out)
        assert proc.returncode == (1 if strategy == "nosuch" else 0), err
        assert operation["status"] == ("failed" if strategy == "nosuch" else "completed")
        operations[operation["operation_id"]] = operation
    task_jobs = task_jobs_seen(agent)
    spans = wait_for_jobs(rx, [(KIND_COMMANDS[o["kind"]], o["request_id"])
                               for o in operations.values()], task_jobs)
    for op_id, operation in operations.items():
        job = job_of(operation["request_id"], spans)
        if not job_seen(operation["kind"], task_jobs):
            check_unseen_job(rx, op_id, job)
            continue
        assert job and job["name"] == JOBS[operation["kind"]], operation
        assert job["resource"]["service.name"].startswith(f"ktrdr-{operation['kind']}-worker-")
        raised = operation["kind"] == "training" and operation["status"] == "failed"
        assert job["status"]["code"] == ("STATUS_CODE_ERROR" if raised else "STATUS_CODE_UNSET"), job
        assert job["attributes"].get("error.type") == ("ValueError" if raised else None), job
        reports = spans_named(rx, f"/api/v1/operations/{op_id}/status", 4)
        servers = [s for s in reports if s["kind"] == "SPAN_KIND_SERVER"]
        calls = [s for s in reports if s["kind"] == "SPAN_KIND_CLIENT"]
        assert len(servers) == len(calls) == 2, reports
        for server in servers:
            call = parent_of(server, calls)
            assert call and call["parent_span_id"] == job["span_id"], (job, call)
            assert call["trace_id"] == job["trace_id"]
            assert int(job["end_time_unix_nano"]) >= int(call["end_time_unix_nano"])
        polls = poll_spans(rx, op_id)
        clients = [s for s in polls if s["kind"] == "SPAN_KIND_CLIENT"]
        assert clients and len(clients) * 2 == len(polls), polls
        for server in (s for s in polls if s["kind"] == "SPAN_KIND_SERVER"):
            call = parent_of(server, clients)
            assert call and call["resource"]["service.name"] == "ktrdr"
            assert server["name"] == "GET /api/v1/operations/{id}"


def test_the_mcp_tool_server_calls_the_api(system):
    variant, agent, rx, ktrdr = system
    rid = f"mcp-{uuid.uuid4().hex[:12]}"
    port = ktrdr.base + 6
    reply = subprocess.run(
        ["curl", "-sS", "-X", "POST", "-H", "Content-Type: application/json",
         "-d", json.dumps({"symbol": "AAPL", "timeframe": "1d"}),
         f"http://127.0.0.1:{port}/tools/load_data?request_id={rid}"],
        capture_output=True, text=True, timeout=30)
    assert json.loads(reply.stdout)["status"] == 200, reply
    deadline = time.time() + 20
    while True:
        mine = [s for s in received(rx) if request_id_of(s) == rid]
        if len(mine) >= 6 or time.time() > deadline:
            break
        time.sleep(0.2)
    caller = one(mine, "CLIENT", "curl")
    tool = one(mine, "SERVER", "ktrdr-mcp", "POST /tools/load_data")
    call = one(mine, "CLIENT", "ktrdr-mcp")
    api = one(mine, "SERVER", "ktrdr-api", "POST /api/v1/data/load")
    host_call = one(mine, "CLIENT", "ktrdr-api")
    host = one(mine, "SERVER", "ktrdr-ib-host-service", "POST /data/historical")
    chain = [caller, tool, call, api, host_call, host]
    for parent, child in zip(chain, chain[1:]):
        assert child["parent_span_id"] == parent["span_id"], (parent["name"], child["name"])
    assert {s["trace_id"] for s in chain} == {caller["trace_id"]}
