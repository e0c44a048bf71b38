"""Backend profiles: the pole's messages in a platform's own topics and payloads.

`native` is the pole's own API (docs/mqtt.md). Every other profile (Home Assistant,
ThingsBoard, Sparkplug B, Huawei IoTDA) is a sans-I/O translator (`base.Profile`)
driven by a runner with its own connection and its own durable queue.
"""
