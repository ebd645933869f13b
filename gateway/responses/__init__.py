"""The Responses API served over chat completions: pure translation modules and the stateful service."""
