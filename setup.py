"""Install the RULE engine (`verl`) and the Rejection-Steering / baselines package (`RS`).

GPU machines: ``pip install -r requirements.txt && pip install -e .``
CPU machines: ``bash scripts/setup_cpu.sh`` (pins torch==2.13.0, fp32, no vLLM / flash-attn).
"""

from setuptools import find_packages, setup

setup(
    name="rule-unlearn",
    version="0.1.0",
    description="RULE: Reinforcement UnLEarning - a verl-style RL engine for refusal-based LLM unlearning",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["verl", "verl.*", "RS", "RS.*", "data", "data.*"]),
    include_package_data=True,
    install_requires=[],  # pinned in requirements.txt (GPU) / requirements-cpu.txt (CPU)
    extras_require={"gpu": ["vllm", "flash-attn"]},
)
