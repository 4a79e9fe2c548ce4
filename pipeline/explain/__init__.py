"""Explain a checkpoint on a user's videos: attention rollout maps, features, t-SNE (`jobs.explain`).

    from pipeline.explain.run import run_explain
    result = run_explain(checkpoint, items, bad_rows, output, spec)     # on Ray

The math is Ray-free (`pipeline.model.rollout`: maps and pre-head features from one forward
pass; `tsne`: t-SNE and silhouette in numpy; `outputs`: what is written, docs/EXPLAIN.md). The
run reuses inference's pieces: the checkpoint, clip and video checks and the recipe resolution
(`pipeline.infer.inputs` / `config`), its decode task (`pipeline.infer.tasks.decode_video_task`),
and adds one model actor (`run.Explainer`) that returns a video's clip features and maps.
`run` is the only module here that imports Ray.
"""
