"""Language models trained with RL: pure sampling, scoring and small pretrain-then-RL tasks.

(Filled in by the RL fine-tuning work: ``funrl.lm.sample``, ``funrl.lm.tasks``.)
"""
