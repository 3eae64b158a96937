"""The migration engine: phases and plan, hand-over of subjects, the data-loss policy, verification.

No Pulumi import: the providers, the gate and the CLI call into it.
"""
