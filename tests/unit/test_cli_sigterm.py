"""SIGTERM in a CLI command unwinds the main thread, even when it lands where Python swallows exceptions."""
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import os, signal, time
    from beatbus import cli

    cli._install_sigterm()

    class Finalized:
        def __del__(self):
            # the signal is handled here, inside a finalizer, where Python ignores the exception it raises
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)

    try:
        obj = Finalized()
        del obj
        time.sleep(5)
        print("survived")
    except cli._Terminated:
        print("terminated")
""")


def test_a_sigterm_swallowed_in_a_finalizer_is_delivered_again():
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "terminated", (r.stdout, r.stderr)
    assert "Exception ignored" not in r.stderr, r.stderr
