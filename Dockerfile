# The Vitrine service image: embedder, recall worker and CLI. Serving needs onnxruntime only;
# build with --build-arg EXTRAS=gpu for onnxruntime-gpu on NVIDIA hosts, or EXTRAS=train to
# build models inside the image.
FROM python:3.11-slim
ARG EXTRAS=""
ENV PYTHONUNBUFFERED=1 VITRINE_HOME=/var/lib/vitrine HF_HUB_OFFLINE=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY app ./app
COPY vitrine ./vitrine
COPY schemas ./schemas
COPY encoders ./encoders
COPY streams ./streams
COPY recall ./recall
RUN pip install --no-cache-dir ".${EXTRAS:+[$EXTRAS]}" \
    && if [ "$EXTRAS" = "gpu" ]; then pip uninstall -y onnxruntime && pip install --no-cache-dir --force-reinstall onnxruntime-gpu; fi
# /models is where docker-compose mounts the shared model volume; a new named volume takes the
# owner of the directory it is mounted on, so create it owned by the service user.
RUN useradd --system --home /var/lib/vitrine vitrine && mkdir -p /var/lib/vitrine /models \
    && chown vitrine /var/lib/vitrine /models
USER vitrine
ENTRYPOINT ["vitrine"]
CMD ["--help"]
