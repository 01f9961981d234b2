"""Realtime voice over Azure Web PubSub: negotiate, the upstream event handler, the utterance
buffer, the turn queue and the turn worker (speech to text, the chat agent, text to speech).
"""
