"""The pipeline's stages, one module per `dvc.yaml` stage, each a thin `main()` that DVC runs in its
own process: read inputs, call the core and model, write outputs. A stage never imports another
stage; it may import `reprokit.core`, `reprokit.model`, `reprokit.release.tracking` (package logs
its run) and `reprokit.monitoring` (the monitor stage).
"""
