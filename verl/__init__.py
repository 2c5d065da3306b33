"""verl (RULE edition): a small EasyR1/verl-style RL engine for LLM unlearning."""

__version__ = "0.1.0"
