"""Per-channel input ranges of the backbone's Linears, for int8's smoothing.

BERT-family encoders carry a few activation channels far larger than the rest (the
LayerNorm outputs that feed the query, key, value and intermediate Linears reach 10-30x
their median channel). With one int8 scale per token, those channels set the scale and
every other channel keeps only a few of its 255 steps. ``int8`` therefore moves part of
each channel's range into the weights (SmoothQuant, arXiv 2211.10438): x W^T = (x / s)
(W s)^T, s_j = max|x_j|^a / max|W_j|^(1-a), so the product is the same in exact
arithmetic and only the rounding changes. max|x_j| comes from running the fp32 backbone
once, at load, over the sentences below (written for this file: reviews, news, questions,
instructions, pairs, numbers) and over random token ids from the tokenizer's vocabulary,
which give a backbone in another language channel ranges of its own: the outlier
channels belong to the model, not to the text (BENCHMARKS "Engine": calibrating on these,
on 300 SST-2 training sentences or on random ids alone gave the same error).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from polyhead.engine.spec import position_limit

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

SENTENCES: tuple[str, ...] = (
    'The film opens with a long shot of an empty highway, and it never quite recovers its momentum.',
    'I loved every minute of it, from the soundtrack to the final scene.',
    'A tedious, overlong drama that mistakes silence for depth.',
    'The acting is superb, but the script gives the cast almost nothing to work with.',
    'Funny, warm and surprisingly sharp about family life.',
    'It is the kind of movie you forget before you reach the parking lot.',
    'The central performance is fearless and the direction is precise.',
    'Nothing in this sequel justifies its existence.',
    'An uneven but often charming comedy about two brothers who open a bakery.',
    'The special effects are dated, yet the story still holds up after thirty years.',
    'The city council voted on Tuesday to extend the bus line to the new hospital.',
    'Shares of the company fell eight percent after it cut its forecast for the year.',
    'Heavy rain is expected across the north of the country through the weekend.',
    'The minister said the agreement would be signed before the end of the month.',
    'Researchers found that the drug reduced symptoms in about a third of patients.',
    'Police closed the bridge for several hours after a truck overturned early this morning.',
    'The central bank left interest rates unchanged, citing uncertainty about inflation.',
    "More than two thousand people attended the opening of the museum's new wing.",
    'The team won its fifth straight game, beating the visitors three to one.',
    'Officials have not said when the airport will reopen.',
    'How do I reset my password if I no longer have access to my email?',
    'What is the difference between a virus and a bacterium?',
    'Can you recommend a good book about the history of mathematics?',
    'Why does the sky look red at sunset?',
    'Is it safe to drive through the mountains in winter without chains?',
    "Where can I find the receipts for last month's orders?",
    'Which train should I take to get to the airport before six?',
    'How long does it take to boil an egg so that the yolk stays soft?',
    'Does this laptop support charging over its USB port?',
    'What time does the pharmacy on the corner close on Sundays?',
    'The package arrived two days late and the box was crushed on one side.',
    'Customer service answered within minutes and solved my problem right away.',
    'The battery lasts all day, but the screen is too dim to read outdoors.',
    'I returned the shoes because they were half a size too small.',
    'The instructions were missing, so assembling the shelf took the whole afternoon.',
    'Great value for the price; I would buy it again without hesitation.',
    'The app keeps crashing whenever I try to upload a photo.',
    'My order was cancelled without any explanation, which is frustrating.',
    'The hotel room was clean and quiet, and the staff were very friendly.',
    'The food was cold by the time it reached our table.',
    'Water boils at a lower temperature at high altitude because the air pressure is lower.',
    'The heart pumps blood through a network of arteries, veins and capillaries.',
    'Photosynthesis converts light energy into chemical energy stored in sugar.',
    'The treaty ended a war that had lasted for more than a decade.',
    'Mount Everest is the highest mountain above sea level.',
    'The novel was first published in installments in a weekly magazine.',
    'Most of the population lives along the coast, where the climate is milder.',
    'The river floods every spring when the snow in the mountains melts.',
    'The language has three grammatical genders and a complex system of cases.',
    'Copper is an excellent conductor of both heat and electricity.',
    'To install the package, run the installer and restart the service.',
    'The function returns an empty list when the input contains no valid records.',
    'Set the timeout to thirty seconds and retry the request up to three times.',
    'The database stores each record with a version number and a timestamp.',
    'If the cache is full, the least recently used entry is removed first.',
    'The server rejects requests larger than four megabytes with an error message.',
    'Each worker reads a batch of tasks from the queue and writes its results to disk.',
    'The compiler reports a warning when a variable is assigned but never used.',
    'The configuration file lists every model and the device it runs on.',
    'Run the tests again after updating the dependencies.',
    'She said she would call back after lunch, but she never did.',
    'We walked along the beach until the lights of the town disappeared behind us.',
    'He finally admitted that he had forgotten to book the tickets.',
    "They moved to a small village where everyone knows each other's name.",
    'The children built a fort out of blankets and refused to come to dinner.',
    'My grandmother still writes letters by hand every week.',
    'I am not sure this plan will work, but it is worth a try.',
    'The meeting was moved to Thursday because half the team was travelling.',
    'Nobody expected the quiet student in the back row to win the competition.',
    'After the storm, the garden was full of broken branches and fallen leaves.',
    'The committee, which had met twice already, again failed to reach a decision.',
    'Although the evidence was weak, the jury found him guilty on all counts.',
    'The more she practised, the easier the difficult passages became.',
    'It was not the price but the long wait that made customers leave.',
    'Having finished the report, he sent it to his manager and went home.',
    'The book that I borrowed from the library last week is overdue.',
    'Neither the manager nor the employees were told about the change in advance.',
    'Whoever wrote this letter clearly knew a great deal about the company.',
    'If it had not rained, the match would have been played as planned.',
    'The harder they tried to fix the machine, the worse it seemed to get.',
    'A man is playing a guitar on a street corner.',
    'Two dogs are running through a field of tall grass.',
    'A woman is slicing tomatoes in a kitchen.',
    'The boy kicked the ball over the fence.',
    'A group of people are sitting around a table and talking.',
    'The cat is sleeping on the windowsill.',
    'A child is riding a bicycle down a hill.',
    'Someone is pouring water into a glass.',
    'Three men are carrying a large wooden table.',
    'A plane is taking off from a runway at night.',
    'Quarterly revenue rose to 4.2 billion dollars, up 12 percent from a year earlier.',
    'The flight from London to New York takes about seven hours.',
    'Temperatures will range from minus five to plus three degrees Celsius.',
    'The report was released on 14 March 2019 and revised in June.',
    'Version 2.3 fixes 17 bugs and adds support for 64-bit systems.',
    'About 65 percent of voters took part in the 2020 election.',
    'The recipe calls for 250 grams of flour and two eggs.',
    'Call 555-0134 between 9 a.m. and 5 p.m. to book an appointment.',
    'The bridge is 1,280 metres long and was completed in 1937.',
    'Room 204 is on the second floor, at the end of the hallway.',
    'Wow, that was unexpected!',
    'Absolutely not.',
    'Thanks a lot, see you tomorrow.',
    'Well, I suppose that could work.',
    'This is the worst service I have ever experienced.',
    'Hmm, let me think about it for a moment.',
    'Best. Purchase. Ever.',
    'Not bad at all, honestly.',
    'Oh no, I left my keys in the car again.',
    'Sure, why not?',
    ('The proposal, which the board had rejected twice before, was finally approved after the '
     'chief executive agreed to cut her own salary and to delay the opening of the new factory '
     'until the following spring.'),
    ('Despite months of negotiations, the two sides remained far apart on the question of wages,'
     ' and the union warned that its members would strike if no agreement was reached by the end'
     ' of the week.'),
    ('When the old mill closed, most of the families who had worked there for generations left '
     'the valley, and the school, the post office and finally the only shop in the village '
     'closed one after another.'),
    ('The study followed more than ten thousand adults for twenty years and found that those who'
     ' walked at least thirty minutes a day had a lower risk of heart disease, even after '
     'accounting for diet and smoking.'),
    ('She had planned to spend the summer writing her thesis, but a broken wrist, a flooded '
     'apartment and an unexpected job offer meant that she wrote barely a page before the autumn'
     ' term began.'),
)
RANDOM_SEQUENCES = 64  # random-id sequences, lengths 8-63, seeded
BATCH = 32


def calibration_ids(tokenizer: PreTrainedTokenizerBase, max_length: int = 128,
                    parts: tuple[str, ...] = ("sentences", "random")) -> list[list[int]]:
    """Token ids of every calibration input: each sentence alone and consecutive sentences
    as pairs ("sentences"), and random ids (seed 0) between the tokenizer's special tokens
    ("random"); each cut to ``max_length`` (keeping its closing special token)."""
    singles = tokenizer(list(SENTENCES), truncation=True, max_length=128)["input_ids"]
    pairs = tokenizer(list(SENTENCES[0::2]), list(SENTENCES[1::2]) + [""] * (len(SENTENCES) % 2),
                      truncation=True, max_length=128)["input_ids"]
    if "sentences" not in parts:
        singles, pairs = [], []
    special = set(tokenizer.all_special_ids)
    vocab = torch.tensor([i for i in range(len(tokenizer)) if i not in special])
    g = torch.Generator().manual_seed(0)
    frame = tokenizer("")["input_ids"]  # the special tokens around a text: [CLS] [SEP], <s> </s>
    rand = []
    for _ in range(RANDOM_SEQUENCES if "random" in parts else 0):
        n = int(torch.randint(8, 64, (1,), generator=g))
        ids = vocab[torch.randint(len(vocab), (n,), generator=g)].tolist()
        rand.append([*frame[:1], *ids, *frame[1:]])
    return [x if len(x) <= max_length else [*x[:max_length - 1], x[-1]]
            for x in (*singles, *pairs, *rand)]


@torch.inference_mode()
def input_ranges(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 linears: dict[str, torch.nn.Linear],
                 inputs: list[list[int]] | None = None) -> dict[str, Tensor]:
    """max |x_j| over the calibration inputs (token ids; default ``calibration_ids``) for
    each input channel of each Linear in ``linears`` (path -> module of ``model``), from
    the model as it is (run it in fp32)."""
    ranges: dict[str, Tensor] = {}

    def hook(name: str):
        def record(_mod: torch.nn.Module, args: tuple[Tensor, ...]) -> None:
            m = args[0].detach().reshape(-1, args[0].shape[-1]).abs().amax(0).float()
            ranges[name] = m if name not in ranges else torch.maximum(ranges[name], m)
        return record

    handles = [mod.register_forward_pre_hook(hook(name)) for name, mod in linears.items()]
    try:
        limit = min(128, position_limit(model.config))
        ids = sorted(inputs if inputs is not None else calibration_ids(tokenizer, limit), key=len)
        pad = tokenizer.pad_token_id or 0
        device = next(model.parameters()).device
        for i in range(0, len(ids), BATCH):
            chunk = ids[i:i + BATCH]
            width = max(len(x) for x in chunk)
            batch = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, x in enumerate(chunk):
                batch[r, :len(x)] = torch.tensor(x)
                mask[r, :len(x)] = 1
            model(input_ids=batch.to(device), attention_mask=mask.to(device))
    finally:
        for h in handles:
            h.remove()
    return ranges
