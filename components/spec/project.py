"""The Pulumi project name: the namespace of every stack config key."""

PROJECT = "aa-event-bus"
