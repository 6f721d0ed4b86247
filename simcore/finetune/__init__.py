"""LoRA recovery of a sparsity method's accuracy (issue #15): ``simcore finetune`` trains adapters by
distillation under the method's masks (:mod:`simcore.finetune.train`); ``simcore eval --lora`` applies
them, merged or not (:mod:`simcore.finetune.adapters`)."""
