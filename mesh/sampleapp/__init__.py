"""The bookinfo-style sample app: one small HTTP service that plays every role (productpage, reviews, ...).

Each instance answers JSON naming its service, version and pod, the caller's mTLS identity (from XFCC), and the
results of calling its UPSTREAMS through its sidecar (HTTP_PROXY). Trace headers are propagated.

Test hooks, by request header (like httpbin's /status and /delay), never forwarded upstream:
  x-fail-pod: <pod>|*        answer 503 when this pod matches
  x-fail-times: N            answer 503 to the first N attempts (Envoy's x-envoy-attempt-count)
  x-delay-ms: N              sleep before answering
  x-delay-first-ms: N        sleep only on the first attempt of this x-request-id
  x-status: N                answer with status N
"""
