"""The Pulumi side: the stack config reader, the provider base and the stream, consumer and gate
providers, and the EventBus component the program declares.
"""
