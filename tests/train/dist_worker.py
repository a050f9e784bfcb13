"""Run `engine.tune` in a fresh process under a tf.distribute strategy (used by test_distributed.py).

usage: python dist_worker.py STRATEGY RUN_DIR OUT_JSON [--logical-cpus N] [--deterministic] [--resume]
                             [--kill-at-step N]   (SIGKILL this process at step N, after the step-2 checkpoint)

The strategy needs a fresh process: logical CPU devices (MirroredStrategy on a CPU-only machine)
and MultiWorkerMirroredStrategy must be configured before TensorFlow runs any op. The model is the
registered tiny test architecture (the real architectures are exercised by the
single-process tests); the data is the real synthetic set through the real pipeline.
Writes {"replica_weights_equal", "replicas", "num_replicas_in_sync", "history"} to OUT_JSON and the
final weights to OUT_JSON.npz.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    strategy, run_dir, out_json = sys.argv[1:4]
    import tensorflow as tf

    if "--logical-cpus" in sys.argv:
        count = int(sys.argv[sys.argv.index("--logical-cpus") + 1])
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)

    import numpy as np

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    import tests.tiny_arch  # noqa: F401  (registers tiny_test_net)
    from tests.train.conftest import tiny_recipe

    from finegrain.train import engine

    import signal

    from finegrain.train.progress import Reporter

    class KillAt(Reporter):
        def on_step(self, epoch: int, step: int, logs: dict) -> None:
            if "--kill-at-step" in sys.argv and epoch * 3 + step == int(sys.argv[sys.argv.index("--kill-at-step") + 1]):
                os.kill(os.getpid(), signal.SIGKILL)

    # --mixup: mixup type 1, whose 2B images and B weights each replica finishes on its own share
    recipe = tiny_recipe(train={"epochs": 2, "batch_size": 8, "steps_per_epoch": 3, "base_lr": 0.05},
                         data={"mixup_type": 1 if "--mixup" in sys.argv else 0},
                         runtime={"deterministic": "--deterministic" in sys.argv})
    result = engine.tune(recipe, run_dir, strategy=strategy, resume="--resume" in sys.argv, reporter=KillAt(),
                         checkpoint_every_steps=2)
    equal, replicas = True, 1
    for v in result.model.weights:
        inner = getattr(v, "_value", v)  # the tf.distribute variable behind the Keras variable
        values = [np.asarray(x) for x in getattr(inner, "values", [inner])]
        replicas = max(replicas, len(values))
        same = all(np.array_equal(values[0], other) for other in values[1:])
        if not same:
            print(f"replicas differ: {v.path} {type(inner).__name__} {getattr(inner, 'aggregation', None)}", file=sys.stderr)
        equal &= same
    np.savez(out_json + ".npz", *[np.asarray(v.value) for v in result.model.weights])
    with open(out_json, "w") as f:
        json.dump({"replica_weights_equal": bool(equal), "replicas": replicas,
                   "num_replicas_in_sync": result.summary["replicas"], "history": result.history}, f)

if __name__ == "__main__":
    main()
