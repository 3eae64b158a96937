"""The desired-state layer: stream and consumer specs, subjects, durations, the stack's config model.

Pure pydantic: no Pulumi, no I/O.
"""
