"""Fault injection inside a child process, for tests only.

The real kubelet (`support/real_kubelet.py`) puts this directory on a pod's
`PYTHONPATH` when a test asks it to (`RealKubelet.inject`), so Python imports
it at start-up, before the child's own code. With
``SELFEMO_FAULT_KILL_AFTER_PUT=<regex>`` the process SIGKILLs itself right
after an S3 `PutObject` whose URL matches has succeeded: e.g. just after a
commit's `_SUCCESS` marker is written, the exact moment a crash is meant to
test, which a kill decided from outside (on a log line) can only approximate.
``SELFEMO_FAULT_ONCE=<path>``: fire only if that file does not exist yet, and
create it (a container restarted in place keeps its pod's files).

Hooks go into botocore's built-in handler list, which every new session
registers, so every client the child creates carries them.
"""
import os

_PATTERN = os.environ.get("SELFEMO_FAULT_KILL_AFTER_PUT")

if _PATTERN:
    import re
    import signal

    from botocore import handlers

    def _remember_url(params, context, **_):
        context["selfemo_fault_url"] = params.get("url", "")

    def _kill_after(http_response, context, **_):
        once = os.environ.get("SELFEMO_FAULT_ONCE")
        if http_response.status_code < 300 and re.search(_PATTERN, context.get("selfemo_fault_url", "")) \
                and not (once and os.path.exists(once)):
            if once:
                open(once, "w").close()
            print(f"fault injected: SIGKILL after PUT {context['selfemo_fault_url']}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    handlers.BUILTIN_HANDLERS.extend([("before-call.s3.PutObject", _remember_url),
                                      ("after-call.s3.PutObject", _kill_after)])
