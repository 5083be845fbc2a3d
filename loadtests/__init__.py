"""Load tests: Locust users and shapes, the SLO file, benchmarks against peer servers."""
