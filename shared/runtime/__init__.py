"""Worker shell: pipeline, worker, kafka config, offset fence, observability, start-up checks."""
