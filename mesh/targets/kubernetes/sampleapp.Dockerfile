# The sample app as an image for the kubernetes target (built and `kind load`ed by Pulumi). The HTTP and TCP modes are
# standard library only; the gRPC sample service (`python -m mesh.sampleapp.grpc_server`) needs grpcio.
FROM python:3.11-slim
RUN pip install --no-cache-dir "grpcio>=1.60"
WORKDIR /app
COPY mesh/__init__.py mesh/__init__.py
COPY mesh/sampleapp mesh/sampleapp
ENV PYTHONUNBUFFERED=1 PORT=9080
USER 65532
EXPOSE 9080
ENTRYPOINT ["python", "-m", "mesh.sampleapp"]
