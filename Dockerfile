# The image every cluster node runs (cluster.yaml, deploy/kuberay/): Ray and Python from the pinned
# rayproject image, a CUDA torch, the exact pins of deploy/requirements-cluster.txt, and this project.
#   docker build -t registry.example.com/video-transformers:0.1.0 . && docker push registry.example.com/video-transformers:0.1.0
# (registry.example.com stands for your registry: ECR, GCR/Artifact Registry, GHCR, ...)
FROM rayproject/ray:2.60.0-py311-gpu

# The CUDA build of the torch that `make test` pins (Makefile TORCH); cu128 runs on the image's driver.
ARG TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
COPY --chown=ray:users deploy/requirements-cluster.txt /home/ray/requirements-cluster.txt
RUN pip install --no-cache-dir $TORCH \
 && pip install --no-cache-dir -r /home/ray/requirements-cluster.txt

# The project itself (deps come from the pins above, so --no-deps). `ray job submit --working-dir .`
# still ships your checkout, which comes first on sys.path: the code a job runs is the code you have.
WORKDIR /home/ray/app
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users pipeline ./pipeline
COPY --chown=ray:users jobs ./jobs
COPY --chown=ray:users configs ./configs
RUN pip install --no-cache-dir --no-deps . \
 && python -c "import pipeline.model, jobs.train, jobs.infer, jobs.preprocess"
