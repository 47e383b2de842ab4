"""The sample app's services. Locally each version runs `python -m mesh.sampleapp`; on Kubernetes, the
same app as an image built from this repository (see Dockerfile)."""

from __future__ import annotations

from mesh.api import Service, Version

IMAGE = "meshops/sampleapp:0.1.0"
APP = ["{python}", "-m", "mesh.sampleapp"]


def _version(name: str, *, calls: str = "", replicas: int = 1, **env: str) -> Version:
    return Version(
        name=name,
        replicas=replicas,
        command=APP,
        image=IMAGE,
        env={"UPSTREAMS": calls, **env} if calls else env,
    )


# Bookinfo's own client timeouts, on which Istio's docs tasks depend: productpage gives details 3 s and reviews 3 s
# plus one retry (a 7 s ratings delay shows "reviews unavailable" after about 6 s); reviews v2 waits 10 s for
# ratings, v3 2.5 s.
productpage = Service(
    name="productpage",
    versions=[
        _version("v1", calls="http://details:9080/details;timeout=3,http://reviews:9080/reviews;timeout=3;attempts=2")
    ],
)
details = Service(name="details", versions=[_version("v1")])
reviews = Service(
    name="reviews",
    versions=[
        _version("v1", replicas=2),
        _version("v2", calls="http://ratings:9080/ratings;timeout=10"),
        _version("v3", calls="http://ratings:9080/ratings;timeout=2.5"),
    ],
)
ratings = Service(name="ratings", versions=[_version("v1")])

SERVICES = [productpage, details, reviews, ratings]
