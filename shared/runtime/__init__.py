"""The worker shell: batch pipeline, Faust worker, Kafka config, offset fence, observability."""
