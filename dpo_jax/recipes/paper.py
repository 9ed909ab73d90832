"""The paper's reported results, as facts to set ours beside (Rafailov et al. 2023, "Direct Preference
Optimization"; the figures as listed in the project's REFERENCE.md). Never mixed with ours: a table
prints them in their own rows, marked "paper".

Each claim is a row: (what, setting, value). Values are the paper's numbers where it reports numbers,
else its qualitative statement.
"""

PAPER = "paper (Rafailov et al. 2023)"

PAPER_CLAIMS: dict[str, list[tuple[str, str, str]]] = {
    "imdb": [
        (
            "frontier",
            "GPT-2-large SFT, RoBERTa-large sentiment classifier, 4 samples per prefix",
            "DPO's reward-vs-KL frontier dominates PPO, PPO-GT, unlikelihood and preferred-FT at every KL "
            "(qualitative: a figure, no table)",
        ),
    ],
    "tldr": [
        ("win rate vs reference summaries, DPO", "GPT-4 judge, temperature 0", "about 61%"),
        ("win rate vs reference summaries, PPO (best)", "GPT-4 judge, temperature 0", "about 57%"),
        ("stability", "temperatures 0..1", "DPO is more stable across temperatures than PPO"),
    ],
    "hh": [
        (
            "win rate vs chosen, single-turn test",
            "GPT-4 judge",
            "DPO is the only method above the chosen responses",
        ),
        (
            "win rate over training",
            "GPT-4 judge",
            "DPO's win rate over chosen is fairly stable over training",
        ),
    ],
    "news": [
        ("win rate vs reference highlights, DPO", "CNN/DailyMail, temperatures 0 / 0.25", "0.36 / 0.31"),
        ("win rate vs reference highlights, PPO", "CNN/DailyMail, temperatures 0 / 0.25", "0.26 / 0.23"),
    ],
    "judge_agreement": [
        ("respondents", "DPO / SFT / PPO-1 vs PPO at temperature 0", "272 / 122 / 199"),
        ("GPT-4 (S) win %", "same", "47 / 27 / 13"),
        ("GPT-4 (C) win %", "same", "54 / 32 / 12"),
        ("human win %", "same", "58 / 43 / 17"),
        ("GPT-4 (S)-human agreement", "same", "70 / 77 / 86"),
        ("GPT-4 (C)-human agreement", "same", "67 / 79 / 85"),
        ("human-human agreement", "same", "65 / - / 87"),
    ],
}
