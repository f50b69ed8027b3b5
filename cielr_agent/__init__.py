"""cielr-agent: reasoning-driven image editing as a LangGraph plugin."""
