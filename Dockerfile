# The ponder image: a Ray base image with ponder installed from its built wheel, the same install
# as the tested path (tests/test_wheel.py: pip wheel, then pip install of the wheel; the shipped
# models are package data, so the image has them).
#   CPU (the shipped models, hf engines):  docker build -t ponder:0.1.0 .
#   GPU (vLLM engines):                    docker build --build-arg VARIANT=-gpu --build-arg EXTRAS=vllm -t ponder:0.1.0-gpu .
# RAY_VERSION must be the config's deploy.ray_version (tests/deploy checks the default).
ARG RAY_VERSION=2.60.0
ARG PYTHON=py311
ARG VARIANT=

FROM rayproject/ray:${RAY_VERSION}-${PYTHON}${VARIANT} AS build
WORKDIR /src
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users ponder ./ponder
RUN pip wheel --no-deps --no-cache-dir -w /tmp/dist .

FROM rayproject/ray:${RAY_VERSION}-${PYTHON}${VARIANT}
ARG RAY_VERSION
ARG EXTRAS=
COPY --from=build /tmp/dist /tmp/dist
# Ray stays the base image's version (the cluster's pods and the autoscaler must agree on it).
RUN whl="$(ls /tmp/dist/ponder-*.whl)" \
 && pip install --no-cache-dir "${whl}${EXTRAS:+[$EXTRAS]}" "ray[default,serve]==${RAY_VERSION}" \
 && rm -rf /tmp/dist \
 && ponder --version
