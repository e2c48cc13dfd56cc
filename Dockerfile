# syntax=docker/dockerfile:1
# One image for the API and every Ray node (head and GPU workers) of docker-compose.yml.
# No secret goes in: DATABASE_URL, RAY_AUTH_TOKEN and the rest come from the environment.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch in a layer of its own, before the code that changes more often. On x86-64, PyPI's
# builds of these versions are the CUDA ones (their CUDA libraries come as wheels); the host
# only needs the NVIDIA driver and container toolkit.
RUN pip install "torch==2.14.1" "torchvision==0.29.1"

# The project, installed (not editable) from the build context, which stays out of the image.
RUN --mount=type=bind,source=.,target=/src,rw pip install /src

# Named volumes start as copies of these folders, so the user below may write to them.
RUN useradd --create-home --uid 1000 clrstudy \
    && mkdir -p /data /shared \
    && chown clrstudy:clrstudy /data /shared
USER clrstudy
WORKDIR /home/clrstudy

EXPOSE 8000
CMD ["clrstudy", "serve", "--host", "0.0.0.0", "--port", "8000"]
