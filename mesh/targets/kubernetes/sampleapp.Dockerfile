# The sample app as an image for the kubernetes target (standard library only; built and `kind load`ed by Pulumi).
FROM python:3.11-slim
WORKDIR /app
COPY mesh/__init__.py mesh/__init__.py
COPY mesh/sampleapp mesh/sampleapp
ENV PYTHONUNBUFFERED=1 PORT=9080
USER 65532
EXPOSE 9080
ENTRYPOINT ["python", "-m", "mesh.sampleapp"]
