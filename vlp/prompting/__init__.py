"""Continuous prompts for frozen models: P-tuning v1/v2 and CoOp.

A prompt encoder (:mod:`.prompt_encoder`) makes the vectors, a template
(:mod:`.template`) decides where they go among real tokens, :mod:`.splice` puts them
into the embedding stream; deep prompts (:mod:`.deep_prompts`) go into every layer's
keys and values instead; CoOp (:mod:`.coop`) learns a classifier's prompt context.
"""

from vlp.prompting.coop import CoOpContext, coop_template
from vlp.prompting.deep_prompts import DeepPrompts
from vlp.prompting.freezing import ParameterCount, train_only
from vlp.prompting.kshot import kshot_indices, kshot_subset
from vlp.prompting.prompt_encoder import PromptEncoder
from vlp.prompting.splice import prompts_spliced, splice
from vlp.prompting.template import IGNORE_INDEX, SLOT, PromptedBatch, PromptTemplate

__all__ = [
    "IGNORE_INDEX",
    "SLOT",
    "CoOpContext",
    "DeepPrompts",
    "ParameterCount",
    "PromptEncoder",
    "PromptTemplate",
    "PromptedBatch",
    "coop_template",
    "kshot_indices",
    "kshot_subset",
    "prompts_spliced",
    "splice",
    "train_only",
]
