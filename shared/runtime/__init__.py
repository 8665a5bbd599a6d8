"""Worker shell: pipeline, worker, kafka config, offset fence, observability, stack identity."""
