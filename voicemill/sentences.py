"""Sentences for a synthetic target speaker: what a Kokoro (or Piper) voice reads to make a dataset.

About ten minutes of speech for training and a fixed set of ten held out for
scoring, written for this project (no quoted or copyrighted text): everyday
topics (weather, food, travel, work, family, shops, sport, the house), 4 to
25 words each, with numbers, dates, times, money and percentages that
``voicemill.textnorm.normalize`` writes out as words.

- :data:`TRAIN_SENTENCES`: 160 sentences; in Kokoro's jf_alpha voice they
  are 9.2 minutes of speech (see ``voicemill.kokoro.write_target_dataset``).
- :data:`HELD_OUT_SENTENCES`: 10 sentences never trained on, chosen to span the
  lengths (4 to 20 words) and to include money, a time, a year, a percentage
  and a question, so a round trip (ASR, speaker similarity) scores the kinds
  of text the voice has to read.
- :data:`SENTENCES`: the two together, held-out last, which is the order
  ``write_target_dataset(..., held_out=10)`` expects.
"""

from __future__ import annotations

TRAIN_SENTENCES: tuple[str, ...] = (
    # the weather and the seasons
    "It rained all morning, but the sun came out just after lunch.",
    "The forecast says it will be windy on Thursday.",
    "Last winter the lake froze for the first time in 12 years.",
    "By the end of August the grass was brown and the streams were almost dry.",
    "Take an umbrella with you.",
    "The temperature dropped to minus 8 degrees on the night of January 14.",
    "A thick fog rolled in from the sea and hid the harbour lights.",
    "Spring arrived late this year, and the cherry trees only blossomed in May.",
    "We sat on the porch and watched the thunderstorm move slowly across the valley.",
    "Summer evenings here are long, bright, and full of the sound of crickets.",
    "The wind blew so hard that our garden chairs ended up in the neighbour's hedge.",
    "About 60% of the days in November were grey and wet.",
    # food and cooking
    "Chop the onions finely and fry them in a little butter until they turn golden.",
    "The soup needs another pinch of pepper.",
    "We bought three kilograms of potatoes and a bunch of fresh parsley at the market.",
    "My grandmother made plum jam every September and gave jars to the whole street.",
    "A large pizza costs $14.50, and the delivery is free after 9 p.m.",
    "Leave the dough in a warm place for an hour, covered with a clean towel.",
    "He burned the toast again.",
    "The restaurant on the square serves fish on Fridays and a roast on Sundays.",
    "Could you pass me the salt, please?",
    "She cut the cake into twelve equal pieces, one for every guest at the table.",
    "The lemonade was too sour, so we added two spoons of honey.",
    "Breakfast at the hotel is served from 7:00 to 10:30.",
    "Rice, beans, and a little chili make a cheap and filling dinner.",
    "The kettle whistled while the bread was still in the oven.",
    # travel and getting around
    "The ferry leaves the island twice a day, at dawn and at dusk.",
    "Our flight was delayed by 45 minutes because of the snow.",
    "Keep your ticket until the end of the journey, because the inspector may ask for it.",
    "The road to the village winds through vineyards and small olive groves.",
    "We missed the last bus and had to walk home under the stars.",
    "A return ticket to the city costs $23.40 on weekdays.",
    "The station was rebuilt in 1994 with a glass roof and two new platforms.",
    "Turn right after the petrol station and park behind the blue warehouse.",
    "My suitcase arrived three days after I did.",
    "The hotel overlooks a quiet bay where fishing boats come in every morning.",
    "They cycled 80 kilometres along the river in a single day.",
    "Is this seat taken?",
    "The tram stops right outside the museum, so you cannot miss it.",
    "On the way back we stopped at a small café that sold the best apple pie in the county.",
    # work and school
    "The meeting has been moved to Wednesday at 2:15.",
    "Please send me the report before Friday, even if it is not finished.",
    "Our office moved to the third floor of the old printing works.",
    "She started her new job on March 3, 2020, a week before everything closed.",
    "The printer is out of paper again.",
    "He works the night shift at the hospital and sleeps until noon.",
    "The company hired 35 new engineers last year, most of them straight from university.",
    "Every Monday the team writes down what went well and what went wrong.",
    "The school bell rings at 8:45, and the gates close five minutes later.",
    "Our teacher read us a story every Friday afternoon if the class had been quiet.",
    "The exam results will be posted online on the 21st of June.",
    "I forgot my password for the third time this week.",
    "The library has extended its opening hours during the exam period.",
    "She finished her thesis on river birds after four years of field work.",
    "Nearly 90% of the students passed the final test.",
    # family and friends
    "My brother called from Canada to wish me a happy birthday.",
    "The twins were born on a snowy morning in February 2015.",
    "Grandpa still walks to the newsagent every morning to buy a paper.",
    "We played cards until midnight and nobody wanted to go home.",
    "Her son is learning to ride a bicycle without stabilisers.",
    "The whole family gathered at the farm for my aunt's seventieth birthday.",
    "He writes postcards to his friends whenever he travels, even short trips.",
    "My parents met at a dance in 1978 and married two years later.",
    "The baby finally fell asleep.",
    "Our cousins stayed with us for a week and ate everything in the fridge.",
    "She laughed so hard that tea came out of her nose.",
    "Every Sunday we call my grandmother, who lives alone by the sea.",
    # shopping and money
    "A pair of walking boots was reduced from $120 to $85 in the sale.",
    "The corner shop closes early on Wednesdays.",
    "I paid $2.60 for a coffee and a small croissant.",
    "The rent went up by 7% this year.",
    "She keeps every receipt in a shoebox under the bed.",
    "The new phone costs almost $900, which is more than my first car.",
    "We saved $1,250 by fixing the washing machine ourselves.",
    "The bookshop gives a discount to anyone who brings their own bag.",
    "Do you take cards, or only cash?",
    "A dozen eggs used to cost much less than they do today.",
    "The electricity bill for January came to $184.",
    "He sold his old guitar for $300 and bought a bicycle with the money.",
    # the house and the garden
    "The kitchen tap has been dripping for a week.",
    "We painted the living room a pale green colour.",
    "The cat sleeps on the radiator all winter long.",
    "Someone left the garden gate open, and the dog ran off into the woods.",
    "The roof needs new tiles before the autumn storms.",
    "Our neighbour grows enormous sunflowers along the fence, some taller than the shed.",
    "The boiler broke down on the coldest night of the year.",
    "I planted 24 tulip bulbs in October, and only six came up.",
    "The attic is full of boxes that nobody has opened since 1999.",
    "Please close the window when you leave the room.",
    "The apple tree in the back garden was planted by my great grandfather.",
    "He spent the whole weekend building a bookcase from old pallets.",
    # sport and leisure
    "The local team won the match by three goals to one.",
    "She swims 40 lengths of the pool every morning before work.",
    "The marathon starts at 9:00 and the roads stay closed until mid afternoon.",
    "We went fishing on the lake but caught nothing except an old boot.",
    "The tennis club has six courts and a small café.",
    "He has run every day since the first of January.",
    "Climbing the hill took us two hours, and the view was worth every step.",
    "The chess tournament lasted until late in the evening.",
    "About 12,000 people watched the final in the stadium.",
    "Our yoga class moved to the community hall on Elm Road.",
    "The children built a raft from planks and barrels.",
    "Who won the race?",
    # health
    "The doctor told him to drink more water and walk for half an hour a day.",
    "My appointment at the dentist is on Tuesday at 11:20.",
    "She caught a cold after standing in the rain at the bus stop.",
    "Try to get some rest tonight.",
    "The pharmacy on the high street is open until 8 p.m. on Saturdays.",
    "He broke his wrist when he slipped on the icy steps.",
    "Sleeping eight hours a night made a big difference to her mood.",
    # technology and news
    "The internet was down for the whole afternoon.",
    "My laptop battery only lasts about two hours now.",
    "The town council voted to plant 500 new trees along the main road.",
    "A new bridge over the river will open in the spring of 2027.",
    "The radio said that the motorway is closed because of an accident.",
    "He keeps his old records in alphabetical order, from jazz to folk.",
    "The museum reopened on April 5, after two years of repairs.",
    "Almost 3,000 people signed the letter asking for a new playground.",
    "The company says that the update will be ready by the end of the month.",
    "Unemployment in the region fell to 4.5% last quarter.",
    # nature and animals
    "A family of ducks crossed the road, and all the traffic stopped to let them pass.",
    "The owl calls from the old oak every night just after ten.",
    "We saw a fox in the field behind the school.",
    "Bees visit the lavender all day long.",
    "The river burst its banks twice in the winter of 2013.",
    "Squirrels buried nuts all over the lawn.",
    "In the autumn, thousands of geese fly south over the marshes.",
    "The forest path was covered in yellow leaves and smelled of rain and mushrooms.",
    "A robin sang from the top of the fence while we ate our breakfast outside.",
    "The horses in the next field come to the gate when they hear the car.",
    # small moments and conversation
    "I will be there in ten minutes.",
    "Thank you for the flowers, they are beautiful.",
    "Could you turn the music down a little?",
    "We should leave before the traffic gets bad.",
    "I think I left my keys on the kitchen table.",
    "That is the best news I have heard all week.",
    "Sorry, I did not catch your name.",
    "Let me know when you get home safely.",
    "The concert was sold out, so we listened from the park outside.",
    "If you are cold, there is a blanket on the sofa.",
    "It took me a long time to understand what she meant.",
    "The clock in the hall is five minutes fast, so do not trust it.",
    "He whistled a tune that I had not heard since I was a child.",
    "We waited for the rain to stop and then ran to the car.",
    "Nobody remembers who started the tradition, but everyone joins in.",
    "She wrote the address on the back of an envelope and then lost the envelope.",
    "The library fine was only 50 cents, but I still felt guilty.",
    "We moved into this house on the 1st of October 2011.",
    "The bus driver waved at every child on the way to school.",
    "Her garden gave so many tomatoes that she handed bags of them to strangers.",
    # longer sentences, with pauses at commas
    "When the lights went out, we lit candles, made tea on the camping stove, "
    "and told stories until the power came back.",
    "The festival, which began in 1985 with a single stage, now fills the whole park "
    "for three days every July.",
    "If you follow the coast path for about an hour, you will reach a small beach "
    "that almost nobody knows about.",
    "The old mill by the river, closed for decades, has been turned into flats, "
    "a bakery, and a small cinema.",
    "After dinner we washed the dishes, fed the chickens, and sat outside until "
    "the first stars appeared.",
    "My neighbour, who is 92, still cycles to the market every Saturday and "
    "comes back with a basket full of vegetables.",
    "The plumber came on Monday, found the leak behind the bath, and charged us "
    "$95 for the visit.",
    "Although the shop is tiny, it sells almost everything, from light bulbs and "
    "string to birthday cards and fresh bread.",
    "On the last day it rained so heavily that the campsite turned into a lake "
    "and we packed the tent in the car.",
    "We arrived at the cottage late at night, tired and hungry, and found that "
    "someone had left soup on the stove for us.",
)

HELD_OUT_SENTENCES: tuple[str, ...] = (
    "The ticket costs $18.50.",
    "Please water the plants while I am away.",
    "What time does the last train leave on Sundays?",
    "The village hall was built in 1932 and repaired after the great storm.",
    "Our sales grew by 12% in the first half of the year.",
    "The dentist can see you tomorrow at 3:30, if that suits you.",
    "A cold wind came down from the hills and rattled the windows all night.",
    "She opened the letter slowly, read it twice, and then put it back in the drawer without a word.",
    "The bakery sells warm rolls from six in the morning until they run out.",
    "Every autumn the school holds a fair, and the children sell cakes, old toys, "
    "and plants they have grown themselves.",
)

SENTENCES: tuple[str, ...] = TRAIN_SENTENCES + HELD_OUT_SENTENCES
