// The Vercel AI SDK (`ai` + `@ai-sdk/openai`, provider.chat(...)), unmodified, against the gateway.
// Usage: node check.mjs BASE_URL API_KEY CONVERSATION_ID; prints one JSON object of what it saw.
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, stepCountIs, streamText, tool } from "ai";
import { z } from "zod";

const [baseURL, apiKey, conversation] = process.argv.slice(2);
const provider = (id) => createOpenAI({ baseURL, apiKey, headers: { "X-Conversation-Id": id } });
const out = {};

// two-turn memory (only the new message sent), then a streamed turn
const memory = provider(`${conversation}-memory`).chat("gpt-4o-mini");
out.first = (await generateText({ model: memory, prompt: "My name is Ada." })).text;
out.second = (await generateText({ model: memory, prompt: "What is my name?" })).text;
const streamed = streamText({ model: memory, prompt: "Stream it." });
out.streamed = await streamed.text;

// a tool loop, continued across turns by resending the whole history (as an app keeping `messages` does)
const tools = {
  weather: tool({
    description: "The weather for a question.",
    inputSchema: z.object({ input: z.string() }),
    execute: async ({ input }) => `sunny (${input})`,
  }),
};
const model = provider(`${conversation}-tools`).chat("gpt-4o-mini");
const messages = [{ role: "user", content: "Weather in Paris?" }];
const loop = await generateText({ model, tools, messages, stopWhen: stepCountIs(5) });
out.loop = loop.text;
messages.push(...loop.response.messages, { role: "user", content: "And in Rome?" });
const again = await generateText({ model, tools, messages, stopWhen: stepCountIs(5) });
out.again = again.text;
messages.push(...again.response.messages, { role: "user", content: "And in Oslo?" });
const streamedLoop = streamText({ model, tools, messages, stopWhen: stepCountIs(5) });
out.streamedLoop = await streamedLoop.text;
console.log(JSON.stringify(out));
