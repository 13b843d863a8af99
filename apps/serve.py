"""The workbench: a local web app over one SAE run (:mod:`apps.workbench.server`).

    python -m apps.serve --workdir=RUN [--host=127.0.0.1] [--port=8000] [--batch_window_ms=5]

It answers at once and says "loading" while it compiles and loads in the background;
compiled programs are kept on disk (:mod:`runkit.compile_cache`), so a restart is quick.
Build-lab requests that arrive within ``--batch_window_ms`` of each other are completed in
one batched call (:mod:`apps.workbench.completion_batcher`); 0 completes each alone.
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from apps.workbench.completion_batcher import DEFAULT_WINDOW_MS, MAX_WINDOW_MS
from apps.workbench.server import create_app
from runkit.cli import report_user_errors, run_with_flagfiles

flags.DEFINE_string("workdir", None, "SAE run directory (holds run.json and sae/); required.")
flags.DEFINE_string("host", "127.0.0.1", "Address the workbench listens on.")
flags.DEFINE_integer("port", 8000, "Port the workbench listens on.")
flags.DEFINE_integer("num_builds", None, "Held-out builds the workbench analyzes "
                     "(default: as apps.analyze, the run's --eval_builds).")
flags.DEFINE_float("batch_window_ms", DEFAULT_WINDOW_MS, "How long a build-lab request waits "
                   "for others to be completed with it in one batched call, in milliseconds; "
                   "0 completes each request alone, one at a time.")


@report_user_errors
def main(argv):
    """``python -m apps.serve``; a bad --workdir prints one ``error:`` line."""
    import uvicorn
    from absl import app, flags, logging

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    f = flags.FLAGS
    if not Path(f.workdir).is_dir():
        raise FileNotFoundError(f"--workdir {f.workdir} is not a directory")
    if not 0 < f.port < 65536:
        raise ValueError(f"--port must be 1..65535, got {f.port}")
    if f.num_builds is not None and f.num_builds <= 0:
        raise ValueError(f"--num_builds must be positive, got {f.num_builds}")
    if not 0 <= f.batch_window_ms <= MAX_WINDOW_MS:  # also refuses nan
        raise ValueError(f"--batch_window_ms must be 0..{MAX_WINDOW_MS:g}, got "
                         f"{f.batch_window_ms:g}")
    from runkit.compile_cache import use_persistent_cache

    use_persistent_cache()  # before anything compiles: a restart reads its programs back
    application = create_app(f.workdir, num_builds=f.num_builds, warm=True,
                             batch_window_ms=f.batch_window_ms)
    print(f"workbench for {Path(f.workdir).absolute()}: http://{f.host}:{f.port}/")
    uvicorn.run(application, host=f.host, port=f.port, log_level="warning")
    return 0


if __name__ == "__main__":
    flags.mark_flag_as_required("workdir")
    run_with_flagfiles(main)
