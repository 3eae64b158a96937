"""The `eventbus` CLI: commands, renderers and the preview report. Pulumi is never imported at start-up.
"""
