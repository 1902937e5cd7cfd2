"""Delivery of verification and reset messages: log, SMTP or signed webhook, from a background queue."""

from authsidecar.delivery.messages import Message
from authsidecar.delivery.queue import DeliveryQueue, Job
from authsidecar.delivery.senders import LogSender, Sender, SmtpSender, WebhookSender

__all__ = ["DeliveryQueue", "Job", "LogSender", "Message", "Sender", "SmtpSender", "WebhookSender"]
