"""Maintainer steps, each runnable as `python -m pipeline.<step> --help`.

Data: q2a (question-to-answer), extract (LLM dialogue extraction), long_dialogue, build_dataset.
Model: train (XTuner QLoRA → pth_to_hf → merge), serve (LMDeploy api_server + the hub's endpoints file).
Quality: eval (does each character still sound like itself?).
"""
