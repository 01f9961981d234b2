"""Chat with the persona agents: memory per user and session, context within a token
budget, facts from structured outputs, and the language model behind them.

The same `ChatService` answers HTTP chat and the realtime voice turns.
"""
